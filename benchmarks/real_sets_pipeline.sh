#!/usr/bin/env bash
# The whole pipeline on each shared real set: one `dvc exp run -S …` per set (the README
# "Data sources" commands, plus a cgan run on PneumoniaMNIST), in a fresh clone of HEAD using an
# existing venv, with the wall time of each run and its evaluate table.
#   REUSE_VENV=/path/.venv SHARED=/path/to/shared/data benchmarks/real_sets_pipeline.sh
set -uo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
: "${REUSE_VENV:?set REUSE_VENV to a venv with ganaug installed}"
S=${SHARED:-$repo/../shared/data}
S=$(cd "$S" && pwd)
work=$(mktemp -d /tmp/ganaug-real-XXXX)
git clone -q "$repo" "$work/ganaug" && cd "$work/ganaug"
export PATH="$REUSE_VENV/bin:$PATH"
echo "clone of $(git rev-parse --short HEAD) in $work/ganaug; $(nproc) cores"
run() {
  name=$1; shift
  git checkout -q -- params.yaml  # each run starts from the committed params
  echo "=== $name: dvc exp run $*"
  start=$(date +%s)
  dvc exp run -n "$name" "$@" > "$work/$name.log" 2>&1
  echo "rc=$? wall=$(( $(date +%s) - start )) s"
  grep -A12 "Model A (real)" "$work/$name.log" | head -6
  python3 -c "import json; d=json.load(open('models/gan/quality.json')); print({k: round(d[k], 4) for k in ('fd_domain', 'ssim_real_fake', 'label_fidelity', 'memorisation_pixel_copy_rate', 'train_images_per_second') if k in d})"
  python3 -c "import json; m=json.load(open('data/synthetic/manifest.json')); print(m['counts'], m['memorisation']['memorisation_pixel_copy_rate'], m['ssim_likeness'])"
}
run pneumoniamnist -S data.source=medmnist -S data.medmnist.path="$S/pneumoniamnist.npz" -S data.image_size=28 -S data.on_leakage=drop
run nih-binary -S data.source=nih -S data.nih.csv="$S/nih1000_64/Data_Entry_2017.csv" -S data.nih.images="$S/nih1000_64" -S data.nih.label_mode=binary
run kaggle-binary -S data.source=folders -S data.folders.root="$S/chest_xray_224" -S data.folders.label_rule=kaggle_binary -S data.folders.splits=ignore
run kaggle-3class -S data.source=folders -S data.folders.root="$S/chest_xray_224" -S data.folders.label_rule=kaggle_three_class -S data.folders.splits=ignore
run pneumoniamnist-cgan -S data.source=medmnist -S data.medmnist.path="$S/pneumoniamnist.npz" -S data.image_size=28 -S data.on_leakage=drop -S gan.arch=cgan -S gan.mode=conditional -S gan.loss=hinge -S gan.spectral_norm=true -S gan.augment=diffaugment -S gan.ema_kimg=1
