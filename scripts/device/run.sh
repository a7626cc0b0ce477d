#!/usr/bin/env bash
# The lent GPU machine's command (docs/gpu.md): install Keras for its PyTorch, run the rows, pack them for the
# trip back. Expects var/device/{whl,data,xception_mid_imagenet_fp16.weights.h5}, carried with the call;
# scripts/device/unpack.py then rebuilds and exports the models here. PLAN (gpu-training-rows.sh) picks the rows;
# INIT the xception_mid start (PLAN=converge: the default model's weights, var/device/default_fp16.weights.h5).
set -u
cd "$(dirname "$0")/../.."
[ "${SKIP_INSTALL:-0}" = 1 ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site var/device/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=torch
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
python3 -c "import torch, keras; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'keras', keras.__version__)"
PLAN=${PLAN:-teachers}
case $PLAN in
  converge) INIT=${INIT:-var/device/default_fp16.weights.h5} PACK=(--exact full224 partial299 --fp16) ;;
  *) INIT=${INIT:-var/device/xception_mid_imagenet_fp16.weights.h5} PACK=() ;;
esac
export PLAN
RUNS=${RUNS:-/tmp/runs} DATA=var/device/data INIT=$INIT timeout ${ROWS_TIMEOUT:-510} docs/ml/experiments/gpu-training-rows.sh
echo "rows exit $?"
for f in ${RUNS:-/tmp/runs}/logs/*.log; do echo "== $f"; grep -E "stage .* done|Epoch 1/|s/step" "$f" | head -3; tail -n 3 "$f"; done
KERAS_BACKEND=torch python3 scripts/device/pack.py ${RUNS:-/tmp/runs} "${OUT:-/tmp/out}" "${PACK[@]}"
