#!/usr/bin/env bash
# The training rows that need a GPU (issue 12: an ensemble teacher, a distilled student, VGG16/VGG19
# with BatchNorm and ResNet50V2 from scratch), on Keras' PyTorch backend: the lent GPU machines have
# PyTorch and no TensorFlow. Each run writes an artifact with model.keras and no ONNX yet; on a
# TensorFlow machine `python -m ml export --artifact <dir>` writes and verifies the ONNX (docs/gpu.md).
#
#   DATA=<dataset root with train/ and external/>  INIT=<xception_mid ImageNet .weights.h5>
#   RUNS=<output folder>  [QUICK=1: a few films, for a smoke test on a CPU]  scripts/gpu-training-rows.sh
#
# Runs three teachers and the three from-scratch rows side by side on one GPU, then the student.
# Every run has a wall-clock budget (--max-fit-minutes) and keeps its best weights when it is spent;
# the manifest records whether early stopping or the budget ended each stage.
set -u
export KERAS_BACKEND=torch PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
PY=${PY:-python3}
mkdir -p "$RUNS/logs"
if [ "${QUICK:-0}" = 1 ]; then
  LIMIT=(--max-train-images 48 --max-val-images 24 --bootstrap 20) SIZE=96 SCRATCH_SIZE=64 EPOCHS=2 T_MIN=1 S_MIN=1 X_MIN=1
  TEACHERS=(11) FINE=partial:1:1e-4:adam,full:1:2e-5:adam SCRATCH=(vgg16_bn)
else
  LIMIT=() SIZE=224 SCRATCH_SIZE=128 EPOCHS=40 T_MIN=${T_MIN:-3.2} S_MIN=${S_MIN:-2.3} X_MIN=${X_MIN:-6.5}
  TEACHERS=(11 12 13) FINE=partial:8:1e-4:adam,full:4:2e-5:adam SCRATCH=(vgg16_bn vgg19_bn resnet50v2)
fi

# The default model's recipe (docs/generalisation.md) plus the progressive recipe's last stage
# (everything open, lower rate); all on the default model's patient split (--split-seed 1337).
xception_row() {  # name seed minutes [extra flags]
  local name=$1 seed=$2 minutes=$3; shift 3
  "$PY" -m ml -v train --data-dir "$DATA" --output-root "$RUNS/$name" --cache-dir "$RUNS/cache-$name" \
    --arch xception_mid --init-weights "$INIT" --input-size "$SIZE" --epochs "$EPOCHS" --lr 1e-3 --patience 4 \
    --fine-tune "$FINE" --augmentation acquisition --seed "$seed" --split-seed 1337 --name "$name" \
    --max-fit-minutes "$minutes" "${LIMIT[@]}" "$@" >"$RUNS/logs/$name.log" 2>&1
}

# The source projects' architectures from random weights (no ImageNet weights exist here for them):
# their geometric augmentation, Adam 1e-3 (SGD 1e-4 barely moves from random weights), until the
# validation AUC stops improving for 6 epochs.
scratch_row() {  # arch
  "$PY" -m ml -v train --data-dir "$DATA" --output-root "$RUNS/$1" --arch "$1" --input-size "$SCRATCH_SIZE" \
    --epochs 60 --lr 1e-3 --patience 6 --augmentation geometric --name "$1-scratch" \
    --max-fit-minutes "$X_MIN" "${LIMIT[@]}" >"$RUNS/logs/$1.log" 2>&1
}

evaluate_external() {  # name
  local artifact
  artifact=$(ls -d "$RUNS/$1"/*/ 2>/dev/null | head -1)
  [ -n "$artifact" ] || { echo "$1: no artifact (see logs/$1.log)"; return; }
  "$PY" -m ml evaluate --keras --data-dir "$DATA" --artifact "$artifact" --split external \
    --output "$RUNS/logs/$1.external.json" >/dev/null 2>>"$RUNS/logs/$1.log"
}

started=$(date +%s)
pids=()
for arch in "${SCRATCH[@]}"; do scratch_row "$arch" & pids+=($!); done
teacher_pids=()
for seed in "${TEACHERS[@]}"; do xception_row "teacher$seed" "$seed" "$T_MIN" & teacher_pids+=($!); done
wait "${teacher_pids[@]}"
echo "teachers done after $(($(date +%s) - started)) s"

teachers=()
for seed in "${TEACHERS[@]}"; do
  dir=$(ls -d "$RUNS/teacher$seed"/*/ 2>/dev/null | head -1) && [ -n "$dir" ] && teachers+=(--artifact "$dir")
done
if [ ${#teachers[@]} -gt 0 ]; then
  "$PY" -m ml teacher-scores --data-dir "$DATA" "${teachers[@]}" --output "$RUNS/teacher_scores.tsv" \
    >>"$RUNS/logs/student.log" 2>&1 &&
    xception_row student 21 "$S_MIN" --soft-labels "$RUNS/teacher_scores.tsv" --distill-alpha 0.5
  echo "student done after $(($(date +%s) - started)) s"
fi
for name in "${TEACHERS[@]/#/teacher}" student; do evaluate_external "$name"; done
wait "${pids[@]}"
for arch in "${SCRATCH[@]}"; do evaluate_external "$arch"; done
echo "all done after $(($(date +%s) - started)) s"
