#!/usr/bin/env bash
# Issue 12, item 6 on a CPU: the source projects' VGG19, VGG16 and ResNet50V2 from random weights (no
# ImageNet weights exist here for them), one after another, each until its validation AUC stops
# improving for PATIENCE epochs or its MINUTES are spent (the best epoch's weights are kept either
# way; the manifest says which ended it). Trained in mixed bfloat16: on a CPU with AMX (bfloat16 matrix units)
# this was 3.3x faster per step for VGG16-BN at 128 px (1.70 s vs 5.62 s per batch of 32, 2 cores); the
# exported ONNX is float32 either way. Progress is kept in $RUNS/resume-<arch>: a run stopped any
# other way (a kill, the session ending) goes on where it stopped when the same command runs again;
# one whose MINUTES are spent has finished.
#
#   DATA=<dataset root with train/ and external/>  RUNS=<output folder>  scripts/scratch-rows.sh
#   [ROWS="vgg19_bn vgg16_bn resnet50v2"] [MINUTES_vgg19_bn=45 ...] [PRECISION=mixed_bfloat16]
set -u
PY=${PY:-.venv/bin/python}
PATIENCE=${PATIENCE:-4}
PRECISION=${PRECISION:-mixed_bfloat16}
mkdir -p "$RUNS/logs"

# Adam 1e-3 for the two that trained at it on the GPU; VGG19-BN's 4608->1152 head diverged there at
# 1e-3 (loss 8 from the first epoch), so it gets 1e-4.
declare -A LR=([vgg19_bn]=1e-4 [vgg16_bn]=1e-3 [resnet50v2]=1e-3)
declare -A MIN=([vgg19_bn]=${MINUTES_vgg19_bn:-45} [vgg16_bn]=${MINUTES_vgg16_bn:-45} [resnet50v2]=${MINUTES_resnet50v2:-30})

for arch in ${ROWS:-vgg19_bn vgg16_bn resnet50v2}; do
  started=$(date +%s)
  "$PY" -m ml -v train --data-dir "$DATA" --output-root "$RUNS/$arch" --arch "$arch" --input-size 128 \
    --epochs 60 --lr "${LR[$arch]}" --patience "$PATIENCE" --augmentation geometric --name "$arch-scratch" \
    --precision "$PRECISION" --max-fit-minutes "${MIN[$arch]}" --resume-dir "$RUNS/resume-$arch" \
    >>"$RUNS/logs/$arch.log" 2>&1
  echo "$arch: train exit $? after $(($(date +%s) - started)) s"
  artifact=$(ls -d "$RUNS/$arch"/*/ 2>/dev/null | tail -1)
  if [ -n "$artifact" ]; then
    "$PY" -m ml evaluate --data-dir "$DATA" --artifact "$artifact" --split external \
      --output "$RUNS/logs/$arch.external.json" >/dev/null 2>>"$RUNS/logs/$arch.log"
    echo "$arch: external evaluation exit $?"
  fi
done
