#!/usr/bin/env bash
# The activation experiment in one command: trains the UNet once per activation (relu, gelu, silu,
# pysilu) with the same seed and settings, one after the other, then writes into OUT:
#   relu/ gelu/ silu/ pysilu/   the runs (metrics.csv, config.json, checkpoints, split files)
#   dice_curves.svg             validation dice per epoch, one line per activation
#   dice_train_val.svg          the same with the training dice (dashed)
#   activations.svg             the four activations and their derivatives
#   table.md                    last and best dice per run, with seconds (also printed)
#   panel_<image>.png           the four models on the first three validation images
#
# Usage: scripts/activation_experiment.sh [--data-dir DIR] [--out DIR] [-- extra train_unet flags]
#   --data-dir DIR  Kaggle-layout Carvana folder (default: train_unet's built-in synthetic set)
#   --out DIR       where everything goes (default: runs/activations); its run folders must not
#                   exist yet, since train_unet will not overwrite a run
#   -- FLAGS...     given to every train_unet run, e.g. -- --epochs 10 --image-size 320x480
# The apps are taken from build/release under the repository (TL_BUILD_DIR overrides).
set -euo pipefail

program=$(basename "$0")
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
fail() { echo "$program: $*" >&2; exit 1; }

data_dir=""
out="runs/activations"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir | --out)
      [ $# -ge 2 ] || { echo "$program: $1 needs a value (see --help)" >&2; exit 2; }
      if [ "$1" = --data-dir ]; then data_dir=$2; else out=$2; fi
      shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$program: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
build=${TL_BUILD_DIR:-$root/build/release}
for app in train_unet plot_metrics plot_activations summarize_runs inference_panel; do
  [ -x "$build/$app" ] || fail "$build/$app not found: build it first (cmake --preset release && cmake --build --preset release), or set TL_BUILD_DIR"
done
if [ -n "$data_dir" ] && [ ! -d "$data_dir" ]; then fail "--data-dir $data_dir: no such folder"; fi

activations=(relu gelu silu pysilu)
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

start=$(now)
mkdir -p "$out"
declare -A seconds
for a in "${activations[@]}"; do
  echo "== $a: train_unet --activation $a --seed 20 --out $out/$a ${extra[*]}"
  args=(--activation "$a" --seed 20 --out "$out/$a")
  if [ -n "$data_dir" ]; then args=(--data-dir "$data_dir" "${args[@]}"); fi
  t=$(now)
  "$build/train_unet" "${args[@]}" "${extra[@]}"
  seconds[$a]=$(since "$t")
  echo "== $a: ${seconds[$a]} s"
done

runs=()
checkpoints=()
for a in "${activations[@]}"; do
  runs+=("$out/$a")
  checkpoints+=("$out/$a/best.safetensors")
done
"$build/plot_metrics" --runs "${runs[@]}" --out "$out/dice_curves.svg"
"$build/plot_metrics" --runs "${runs[@]}" --metrics val_dice train_dice --out "$out/dice_train_val.svg"
"$build/plot_activations" --out "$out/activations.svg"
"$build/summarize_runs" --runs "${runs[@]}" --out "$out/table.md" --seconds

# Inference panels for the first three validation images. val.csv has the header image,mask; a
# relative path is relative to the CSV's folder. (Paths holding a comma are not supported here.)
val_csv="$out/relu/val.csv"
[ -f "$val_csv" ] || fail "$val_csv: no such file (train_unet writes the split it used there)"
val_dir=$(dirname "$val_csv")
panels=0
while IFS= read -r line; do
  line=${line%$'\r'}
  [ -n "$line" ] || continue
  image=${line%%,*}
  mask=${line#*,}
  image=${image#\"}; image=${image%\"}
  mask=${mask#\"}; mask=${mask%\"}
  [[ $image == /* ]] || image="$val_dir/$image"
  [[ $mask == /* ]] || mask="$val_dir/$mask"
  name=$(basename "$image")
  "$build/inference_panel" --image "$image" --mask "$mask" --checkpoints "${checkpoints[@]}" \
    --labels "${activations[@]}" --out "$out/panel_${name%.*}.png"
  panels=$((panels + 1))
  [ "$panels" -lt 3 ] || break
done < <(tail -n +2 "$val_csv")
[ "$panels" -gt 0 ] || fail "$val_csv: no validation images"

echo
echo "training time per activation:"
for a in "${activations[@]}"; do printf '  %-7s %8s s\n' "$a" "${seconds[$a]}"; done
total=$(since "$start")
echo "results in $out: table.md, dice_curves.svg, dice_train_val.svg, activations.svg, $panels panel(s)"
echo "total wall time: $total s"
