#!/usr/bin/env bash
# The Carvana recipe: trains the UNet on the cars of a Kaggle-layout folder in two stages and scores
# it on its own held-out cars at full resolution.
#   stage 1  160x240, widths 16,32,64,128, BCE + soft dice, STAGE1_EPOCHS epochs (cosine lr 1e-3 to 0)
#   stage 2  the same model fine-tuned at 320x480 from stage 1's best checkpoint (train_unet --init),
#            STAGE2_EPOCHS epochs, cosine lr STAGE2_LR to 0
# Both stages split the cars the same way (train_unet's automatic split by car: 20% of the cars held
# out, split seed 20), so stage 2 validates on cars neither stage trained on. Then it predicts the
# held-out photos with the flags below and scores the masks at the photos' own resolution against the
# true ones (evaluate_masks: Kaggle's thresholded dice, mean over photos).
#
# Writes into OUT_DIR (which must not hold a run yet):
#   stage1/ stage2/          the two run folders (report.html, curves.svg, metrics.csv, checkpoints)
#   best.safetensors         the recipe's model (stage 2's best by validation dice)
#   val_masks/, val_dice.csv the held-out photos' full-resolution masks and their dice per photo
# and its output ends with one line `predict flags: ...`: the predict_unet flags the score assumes.
#
# Usage: scripts/carvana_recipe.sh DATA_DIR OUT_DIR
#   DATA_DIR  Kaggle-layout folder (DATA_DIR/train/*.jpg, DATA_DIR/train_masks/*_mask.gif)
# Environment: STAGE1_EPOCHS (default 8), STAGE2_EPOCHS (3), STAGE2_LR (0.0003), TL_BUILD_DIR (the
# apps' folder, default build/release under the repository; build it with scripts/train.sh or
# cmake --preset release && cmake --build --preset release).
set -euo pipefail

program=$(basename "$0")
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
fail() { echo "$program: $*" >&2; exit 1; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
[ $# -eq 2 ] || { echo "$program: expected DATA_DIR OUT_DIR, got $# argument(s) (see --help)" >&2; exit 2; }
data_dir=$1
out=$2
[ -d "$data_dir" ] || fail "DATA_DIR $data_dir: no such folder"
[ -d "$data_dir/train" ] && [ -d "$data_dir/train_masks" ] ||
  fail "DATA_DIR $data_dir: expected the Kaggle layout (train/ and train_masks/ inside it)"
if [ -e "$out/best.safetensors" ] || [ -e "$out/stage1" ]; then
  fail "OUT_DIR $out: already holds a recipe run (stage1/ or best.safetensors); give a new folder"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
build=${TL_BUILD_DIR:-$root/build/release}
for app in train_unet predict_unet evaluate_masks; do
  [ -x "$build/$app" ] || fail "$build/$app not found: build it first (scripts/train.sh builds it), or set TL_BUILD_DIR"
done

stage1_epochs=${STAGE1_EPOCHS:-8}
stage2_epochs=${STAGE2_EPOCHS:-3}
stage2_lr=${STAGE2_LR:-0.0003}
predict_flags=(--tta --largest-region)
common=(--data-dir "$data_dir" --features 16,32,64,128 --loss bce+dice --decoder turbo --quiet)

now() { date +%s; }
clock() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }
mkdir -p "$out"

t0=$(now)
echo "== stage 1: 160x240, $stage1_epochs epochs"
"$build/train_unet" "${common[@]}" --image-size 160x240 --epochs "$stage1_epochs" --out "$out/stage1"
t1=$(now)
echo "== stage 2: 320x480 from stage 1's best, $stage2_epochs epochs, lr $stage2_lr"
"$build/train_unet" "${common[@]}" --init "$out/stage1/best.safetensors" --image-size 320x480 \
  --epochs "$stage2_epochs" --lr "$stage2_lr" --out "$out/stage2"
t2=$(now)
cp "$out/stage2/best.safetensors" "$out/best.safetensors.tmp"
mv "$out/best.safetensors.tmp" "$out/best.safetensors"

# The held-out photos, from stage 2's split file (header image,mask; absolute paths, as train_unet
# writes them), linked into one folder for predict_unet.
val_csv="$out/stage2/val.csv"
[ -f "$val_csv" ] || fail "$val_csv: no such file (train_unet writes the split it used there)"
photos="$out/val_photos"
rm -rf "$photos"
mkdir -p "$photos"
while IFS= read -r line; do
  line=${line%$'\r'}
  [ -n "$line" ] || continue
  image=${line%%,*}
  image=${image#\"}; image=${image%\"}
  [[ $image == /* ]] || image="$(dirname "$val_csv")/$image"
  ln -s "$image" "$photos/$(basename "$image")"
done < <(tail -n +2 "$val_csv")

echo "== full-resolution score of the held-out cars (predict_unet ${predict_flags[*]})"
rm -rf "$out/val_masks"
"$build/predict_unet" --checkpoint "$out/best.safetensors" --input "$photos" --output "$out/val_masks" "${predict_flags[@]}"
"$build/evaluate_masks" --pred "$out/val_masks" --truth "$data_dir/train_masks" --csv "$out/val_dice.csv" 2>&1 |
  grep -v "have no prediction"
echo "training time: stage 1 $(clock $((t1 - t0))), stage 2 $(clock $((t2 - t1))), in all $(clock $((t2 - t0)))"
echo "model: $out/best.safetensors"
echo "predict flags: ${predict_flags[*]}"
