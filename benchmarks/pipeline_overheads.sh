#!/usr/bin/env bash
# Pipeline overheads: `ganaug --help` start-up, and `dvc repro` when nothing changed.
#
#   benchmarks/pipeline_overheads.sh [PROJECT_DIR] [ROUNDS]
#
# 1. `python -m ganaug.cli --help` (what bin/ganaug runs) ROUNDS times, wall and CPU seconds,
#    against `python -c pass`, and which heavy libraries the CLI imported (none should be).
# 2. A scratch project in PROJECT_DIR (default: a new folder under ${TMPDIR:-/tmp}): this
#    checkout's src/, bin/, dvc.yaml and params.yaml with a tiny overlay (32 px, 200 phantom
#    images, 2 GAN and classifier epochs, 3 arms: the overlay of tests/test_pipeline.py), git +
#    dvc init, one full `dvc repro`, then ROUNDS no-op `dvc repro` (nothing changed), timed.
#    A no-op repro hashes the deps and outs of every stage; its time grows with their size, not
#    with the work of the stages, so the tiny project measures DVC's fixed cost.
#    PROJECT_DIR "-" skips this part.
# Python: .venv/bin (this checkout's), else the python3 on PATH.
set -euo pipefail

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd -P)
project=${1:-}
rounds=${2:-3}
if [ -x "$repo/.venv/bin/python" ]; then bindir="$repo/.venv/bin"; else bindir=$(dirname "$(command -v python3)"); fi
export PATH="$bindir:$PATH"
tf='%e s wall, %U+%S s CPU'

echo "commit $(git -C "$repo" rev-parse --short HEAD), $(nproc) CPUs, $(uptime | sed 's/.*load/load/')"
echo "== ganaug --help (python -m ganaug.cli --help, PYTHONPATH=src), $rounds rounds"
for _ in $(seq "$rounds"); do
  PYTHONPATH="$repo/src" /usr/bin/time -f "ganaug --help: $tf" python -m ganaug.cli --help > /dev/null
  /usr/bin/time -f "python -c pass: $tf" python -c pass
done
PYTHONPATH="$repo/src" python -c "
import sys, ganaug.cli
heavy = [m for m in ('torch', 'mlflow', 'optuna', 'dvc', 'numpy', 'sklearn', 'scipy') if m in sys.modules]
print('heavy libraries imported by the CLI module:', heavy or 'none')"

[ "$project" = "-" ] && exit 0
[ -n "$project" ] || project=$(mktemp -d "${TMPDIR:-/tmp}/ganaug_overheads.XXXXXX")
echo "== scratch project: $project"
mkdir -p "$project"
cd "$project"
if [ ! -f dvc.lock ]; then
  cp -r "$repo/src" "$repo/bin" "$repo/dvc.yaml" "$repo/.gitignore" .
  python - "$repo/params.yaml" <<'EOF'
import sys
from ruamel.yaml import YAML
tiny = {  # tests/test_pipeline.py's TINY overlay
    "data": {"image_size": 32, "phantom": {"n_images": 200}},
    "reference": {"epochs": 2},
    "gan": {"epochs": 2, "eval_every": 1, "n_eval": 40, "batch_size": 16, "base_channels": 8, "min_diversity": 0.0},
    "synthesize": {"override_gate": True},
    "classifier": {"epochs": 2, "seeds": [0, 1]},
    "arms": {"real": ["real", "balanced"], "mixed": ["synthetic"], "ratios": [1.0]},
    "evaluate": {"n_bootstrap": 100},
}
def merge(base, over):
    for k, v in over.items():
        merge(base[k], v) if isinstance(v, dict) else base.__setitem__(k, v)
    return base
yaml = YAML()
params = yaml.load(open(sys.argv[1]))
with open("params.yaml", "w") as f:
    yaml.dump(merge(params, tiny), f)
EOF
  git init -q && dvc init -q && dvc config core.analytics false
  mkdir -p .dvc && cp -r "$repo/.dvc/plots" .dvc/ 2>/dev/null || true
  git add -A && git -c user.name=bench -c user.email=bench@example.com commit -qm "tiny pipeline"
  export MLFLOW_TRACKING_URI="sqlite:///$project/mlflow.db"
  /usr/bin/time -o .time -f "first dvc repro (tiny overlay): $tf" dvc repro > first_repro.log 2>&1 || { cat .time first_repro.log; exit 1; }
  cat .time
fi
export MLFLOW_TRACKING_URI="sqlite:///$project/mlflow.db"
for _ in $(seq "$rounds"); do
  /usr/bin/time -o .time -f "no-op dvc repro: $tf" dvc repro > noop_repro.log 2>&1
  cat .time
  grep -q "Running stage" noop_repro.log && { echo "not a no-op: a stage ran (see $project/noop_repro.log)"; exit 1; }
done
/usr/bin/time -f "dvc --version: $tf" dvc --version > /dev/null
