#!/usr/bin/env bash
# Every GPU and native-bf16 measurement in one call to a lent GPU machine (the device tool
# allows 600 s per call; these timeouts sum to 510 s, leaving the machine's start-up inside a
# 15-minute budget): training throughput of our loop's best settings against eager fp32, bf16
# against fp32 CamVid accuracy, every inference path on the GPU (with CamVid agreement), then
# native bf16 on the host CPU. Each script rewrites its docs section after every row, so a
# step that runs out of time keeps what it finished.
#
# Before the trip (here):  python -m benchmarks.gpu_camvid pack ../shared/data/camvid .gpu/camvid
#   and, for CamVid agreement on a well-trained model, a CamVid checkpoint into .gpu/ (e.g. a
#   finished run of `pspnet reproduce ablation --budget cpu`: b1236-avg-dr-seed0/best.safetensors).
# On the device, carrying .gpu:  bash benchmarks/accelerators.sh "$OUT" .gpu/camvid [CKPT]
#   (without CKPT the agreement uses the short fp32 GPU run below, a barely trained model).
# Afterwards, copy $OUT/benchmarks.md's new sections into docs/benchmarks.md.
set -uo pipefail
out=${1:?usage: accelerators.sh OUT_DIR [CAMVID_ROOT] [CHECKPOINT]} root=${2:-.gpu/camvid}
checkpoint=${3:-/tmp/accuracy/fp32/last.pt}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$out"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
  grep -m1 "model name" /proc/cpuinfo; nproc; grep -o -E "amx_bf16|avx512_bf16" /proc/cpuinfo | sort -u
} 2>&1 | tee "$out/machine.txt"

step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to OUT/NAME.log
  local name=$1 seconds=$2
  shift 2
  timeout "$seconds" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? after ${SECONDS}s in all" | tee -a "$out/machine.txt"
}

step train_speed 130 python3 -m benchmarks.gpu_training speed --root "$root" \
  --warmup 10 --steps 30 --workers 12
step train_accuracy 130 python3 -m benchmarks.gpu_training accuracy --root "$root" \
  --iterations 200 --workers 12 --keep /tmp/accuracy
agreement=()
[ -f "$checkpoint" ] && agreement=(--checkpoint "$checkpoint" --camvid "$root")
step inference 150 python3 -m benchmarks.gpu_inference --runs 10 --budget 130 \
  --rows "$out/inference_rows.jsonl" "${agreement[@]}"
# Native bf16 on the host CPU (AMX on the lent machines seen so far), the GPU hidden.
if grep -q -E "amx_bf16|avx512_bf16" /proc/cpuinfo; then
  CUDA_VISIBLE_DEVICES= step native_bf16 60 python3 -m benchmarks.inference --configs r50 \
    --runs 3 --paths reference 'exact eager' 'bf16 (eager' \
    --section "Inference with native bf16 on the GPU machine's host CPU"
  [ -f "$checkpoint" ] && CUDA_VISIBLE_DEVICES= step native_bf16_camvid 40 python3 -m \
    benchmarks.camvid_precision --checkpoint "$checkpoint" --root "$root" --paths bf16 \
    --section "CamVid: agreement of native bf16 on the GPU machine's host CPU"
fi
cp docs/benchmarks.md "$out/benchmarks.md"
