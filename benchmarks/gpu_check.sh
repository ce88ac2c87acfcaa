#!/usr/bin/env bash
# ganaug on one CUDA GPU in at most 8 minutes, from the repository root:
#   1. the CUDA tests (tests/test_cuda_paths.py, tests/test_device_metrics.py; they skip without CUDA);
#   2. a throughput table (benchmarks/gpu_throughput.py): GAN images/s for DCGAN at 64 and 128 px and
#      every other registered architecture at 64 px, Inception FID features/s (fp32 and bf16),
#      classifier training images/s;
#   3. the peer, pytorch/examples DCGAN (main.py --dataset fake --accel, 1000 images of 64 px, 3 ch,
#      batch 64), on the same GPU: images/s from a 3-epoch minus a 1-epoch run (start-up cancels);
#   4. the default pipeline's wall time (benchmarks/fresh_clone_pipeline.sh with this .venv).
#
#   benchmarks/gpu_check.sh              after `make setup` (uses .venv/bin/python and .venv/bin/dvc)
#   benchmarks/gpu_check.sh --dry-run    print the steps and check that their files exist; run nothing
#   benchmarks/gpu_check.sh --smoke      every step at tiny sizes on the CPU (checks this script; no pipeline)
# Environment: PYTHON=<interpreter> (default .venv/bin/python, else python3: a machine image with torch,
# where steps whose packages are missing fail and say so); PEER=<folder of the peer's main.py>
# (default ../shared/peers/pytorch-examples-dcgan); BUDGET_S=<seconds for the whole script> (480).
set -uo pipefail
cd "$(dirname "$0")/.."
mode=gpu
case "${1:-}" in
  --dry-run) mode=dry ;;
  --smoke) mode=smoke ;;
  "") ;;
  *) echo "usage: benchmarks/gpu_check.sh [--dry-run | --smoke]" >&2; exit 2 ;;
esac
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; *) PY=$(command -v "$PY" || echo "$PY") ;; esac  # absolute: the peer runs elsewhere
PEER=${PEER:-../shared/peers/pytorch-examples-dcgan}
BUDGET_S=${BUDGET_S:-480}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }
summary=()
note() { summary+=("$1"); echo "== $1"; }

# run NAME SECONDS COMMAND...: at most SECONDS (and never past the budget), its status in the summary
run() {
  local name=$1 limit=$2; shift 2
  local budget; budget=$(left)
  [ "$limit" -gt "$budget" ] && limit=$budget
  if [ "$mode" = dry ]; then note "$name: would run (limit ${limit} s): $*"; return 0; fi
  if [ "$limit" -lt 10 ]; then note "$name: skipped (the ${BUDGET_S} s budget is spent)"; return 0; fi
  echo "== $name (limit ${limit} s): $*"
  local t0 rc; t0=$(date +%s)
  timeout --kill-after 10 "$limit" "$@"; rc=$?
  note "$name: exit $rc after $(( $(date +%s) - t0 )) s$([ $rc -eq 124 ] && echo ' (timed out)')"
}

echo "ganaug gpu_check ($mode) at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%FT%TZ); python: $PY"
for f in tests/test_cuda_paths.py tests/test_device_metrics.py benchmarks/gpu_throughput.py benchmarks/fresh_clone_pipeline.sh; do
  [ -f "$f" ] || { echo "gpu_check: missing $f (run from a checkout of ganaug)" >&2; exit 2; }
done
[ -f "$PEER/main.py" ] || note "peer: $PEER/main.py not found (set PEER=...); its rows are skipped"
if [ "$mode" != dry ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' \
    || { echo "gpu_check: $PY cannot import torch" >&2; exit 2; }
  if [ "$mode" = gpu ] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device (use --smoke to check the script on a CPU)" >&2; exit 2
  fi
fi

# 1. CUDA tests (on the CPU they skip, saying why, and the CPU parts run)
run "CUDA tests" 150 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda_paths.py tests/test_device_metrics.py

# 2. ganaug's throughput table
if [ "$mode" = smoke ]; then
  run "throughput" 300 "$PY" benchmarks/gpu_throughput.py --smoke
else
  run "throughput" 200 "$PY" benchmarks/gpu_throughput.py --compile
fi

# 3. the peer on the same device: seconds of a 1-epoch and a 3-epoch run; the difference is 2 epochs of 1000 images
peer_rows=()
peer() {  # peer WORKERS EPOCHS -> seconds on stdout
  local out t0; out=$(mktemp -d /tmp/gpu-check-peer-XXXX); t0=$(date +%s.%N)
  local accel=(--accel); [ "$mode" = smoke ] && accel=(--dry-run)
  (cd "$PEER" && timeout 120 "$PY" main.py --dataset fake --workers "$1" --batchSize 64 --imageSize 64 --nz 100 \
     --ngf 64 --ndf 64 --lr 0.0002 --beta1 0.5 --niter "$2" --manualSeed 1 --outf "$out" "${accel[@]}" >"$out/log" 2>&1) \
    || { echo "failed: $(tail -n 3 "$out/log" | tr '\n' ' ')" >&2; rm -rf "$out"; return 1; }
  rm -rf "$out"
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)"
}
if [ "$mode" = dry ]; then
  note "peer: would run $PEER/main.py --dataset fake --accel --workers 0|4 --niter 1 and 3"
elif [ -f "$PEER/main.py" ] && [ "$(left)" -gt 60 ]; then
  for workers in 0 4; do
    if [ "$mode" = smoke ]; then
      s=$(peer "$workers" 1) && peer_rows+=("| peer DCGAN --workers $workers, one --dry-run step (CPU smoke) | ran in $s s |")
      break
    fi
    s1=$(peer "$workers" 1) && s3=$(peer "$workers" 3) \
      && peer_rows+=("$(python3 -c "import sys; a, b = map(float, sys.argv[1:]); print(f'| peer DCGAN 64 px 3 ch --workers $workers img/s | {2000 / (b - a):,.0f} (1 epoch {a:.1f} s, 3 epochs {b:.1f} s) |')" "$s1" "$s3")")
  done
  note "peer: ${#peer_rows[@]} rows"
else
  note "peer: skipped (no main.py or under 60 s left)"
fi

# 4. the default pipeline, a fresh clone of HEAD with this venv
if [ "$mode" = gpu ] && [ -x .venv/bin/dvc ]; then
  run "default pipeline (dvc repro)" "$(left)" env REUSE_VENV="$PWD/.venv" benchmarks/fresh_clone_pipeline.sh
elif [ "$mode" = gpu ]; then
  note "default pipeline: skipped (no .venv/bin/dvc: make setup first)"
else
  note "default pipeline: not run in --$mode mode"
fi

echo
[ ${#peer_rows[@]} -gt 0 ] && { echo "| peer (pytorch/examples dcgan, same device) | images/s |"; echo "|---|---|"; printf '%s\n' "${peer_rows[@]}"; echo; }
printf '%s\n' "${summary[@]}"
echo "gpu_check: $(( $(date +%s) - start )) s in all"
