#!/usr/bin/env bash
# Time the README's first command on a fresh clone: `make pipeline` (venv + install + dvc repro).
#   benchmarks/fresh_clone_pipeline.sh            # full: a new venv, install from the registries
#   REUSE_VENV=/path/.venv benchmarks/fresh_clone_pipeline.sh   # pipeline only, with an existing venv
# Prints the wall time of the install and of `dvc repro` separately.
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=$(mktemp -d /tmp/ganaug-fresh-XXXX)
git clone -q "$repo" "$work/ganaug"
cd "$work/ganaug"
echo "fresh clone of $(git rev-parse --short HEAD) in $work/ganaug; $(nproc) cores; $(python3 --version)"
start=$(date +%s.%N)
# each "Running stage" line gets the wall-clock time, so the stages' durations read off the log
stamp() { while IFS= read -r line; do case "$line" in *"Running stage"*) echo "$(date +%T) $line" ;; *) echo "$line" ;; esac; done; }
if [ -n "${REUSE_VENV:-}" ]; then
  mid=$(date +%s.%N)
  PATH="$REUSE_VENV/bin:$PATH" dvc repro 2>&1 | stamp
else
  make setup
  mid=$(date +%s.%N)
  make pipeline 2>&1 | stamp
fi
end=$(date +%s.%N)
python3 - "$start" "$mid" "$end" <<'PY'
import sys
start, mid, end = map(float, sys.argv[1:])
print(f"install: {mid - start:.0f} s   dvc repro: {end - mid:.0f} s   total: {end - start:.0f} s")
PY
cat reports/comparison.md
