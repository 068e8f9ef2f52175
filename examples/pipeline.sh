#!/usr/bin/env bash
# A complete sarkit pipeline: generate (or bring) scenes, tile, train, translate, evaluate.
# Every step is a no-op on re-run once its output exists (--skip-existing), so cron can call it repeatedly.
#
# Usage: examples/pipeline.sh WORK_DIR [STEPS]
set -euo pipefail

work=${1:?usage: pipeline.sh WORK_DIR [STEPS]}
steps=${2:-200}
sarkit=${SARKIT:-sarkit}
mkdir -p "$work"

# Training scene and a separate test scene (different seeds: different fields, same kind of land).
"$sarkit" synth "$work/train-scene" --size 768 --seed 1 --quiet --skip-existing
"$sarkit" synth "$work/test-scene" --size 512 --seed 2 --quiet --skip-existing

"$sarkit" tile "$work/train-scene/s1.tif" --optical "$work/train-scene/s2.tif" \
    --labels "$work/train-scene/labels.tif" --out "$work/tiles" --quiet --skip-existing

"$sarkit" train --model pix2pix --data "$work/tiles" --out "$work/run" --steps "$steps" \
    --model-opt ngf=16 --model-opt ndf=16 --quiet --skip-existing

"$sarkit" translate "$work/test-scene/s1.tif" --checkpoint "$work/run" --out "$work/translated.tif" \
    --quiet --skip-existing

"$sarkit" eval --pred "$work/translated.tif" --target "$work/test-scene/s2.tif" \
    --metrics psnr,ssim,mae --report "$work/report" --quiet --skip-existing

echo "pipeline finished: $work/translated.tif, $work/report/report.html"
