#!/usr/bin/env bash
# One GPU: a 20-iteration fp16 + GradScaler check, then the bf16 CamVid ResNet-50 run.
# Usage: bash benchmarks/gpu/camvid.sh DATA_ROOT OUT_DIR [ITERATIONS] [SECONDS]
# ITERATIONS (default 3600) of the bf16 run, stopped after SECONDS (default 420) if not done;
# the fp16 check gets FP16_SECONDS (default 60) of its own.
# DATA_ROOT comes from `python -m benchmarks.gpu.camvid pack`; its `report` tabulates OUT_DIR.
set -uo pipefail
root=$1 out=$2 iterations=${3:-3600} seconds=${4:-420} fp16_seconds=${FP16_SECONDS:-60}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"
timeout "$fp16_seconds" python3 -m pspnet train --config configs/camvid_pspnet_r50_gpu.yaml \
  --set data.root="$root" iterations=20 precision=fp16 log_every=5 val_limit=4 \
  --out /tmp/fp16 > "$out/fp16.log" 2>&1
echo "fp16 exit $?" | tee -a "$out/gpu.txt"
cp /tmp/fp16/metrics.jsonl "$out/fp16_metrics.jsonl"
timeout "$seconds" python3 -m pspnet train --config configs/camvid_pspnet_r50_gpu.yaml \
  --set data.root="$root" iterations="$iterations" val_every="$((iterations / 3))" \
  checkpoint_every="$((iterations / 3))" --out /tmp/bf16 > "$out/bf16.log" 2>&1
echo "bf16 exit $?" | tee -a "$out/gpu.txt"
cp /tmp/bf16/metrics.jsonl "$out/bf16_metrics.jsonl"
