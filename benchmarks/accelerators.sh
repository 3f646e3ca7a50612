#!/usr/bin/env bash
# Every GPU and native-bf16 measurement in one call to a lent GPU machine (the device tool
# allows 600 s per call; these timeouts sum to 555 s): training throughput of our loop's best
# settings against eager fp32, bf16 against fp32 CamVid accuracy, every inference path on the
# GPU (with CamVid agreement, from the fp32 run's checkpoint), then native bf16 on the host CPU.
# A step that runs out of time leaves what it finished; each writes its docs section.
#
# Before the trip (here):  python -m benchmarks.gpu_camvid pack ../shared/data/camvid .gpu/camvid
# On the device, carrying .gpu:  bash benchmarks/accelerators.sh "$OUT" .gpu/camvid
# Afterwards, copy $OUT/benchmarks.md's new sections into docs/benchmarks.md.
set -uo pipefail
out=${1:?usage: accelerators.sh OUT_DIR [CAMVID_ROOT]} root=${2:-.gpu/camvid}
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

step train_speed 140 python3 -m benchmarks.gpu_training speed --root "$root" \
  --warmup 10 --steps 30 --workers 12
step train_accuracy 150 python3 -m benchmarks.gpu_training accuracy --root "$root" \
  --iterations 200 --workers 12 --keep /tmp/accuracy
checkpoint=/tmp/accuracy/fp32/last.pt
agreement=()
[ -f "$checkpoint" ] && agreement=(--checkpoint "$checkpoint" --camvid "$root")
step inference 165 python3 -m benchmarks.gpu_inference --runs 10 --budget 120 \
  --rows "$out/inference_rows.jsonl" "${agreement[@]}"
# Native bf16 on the host CPU (AMX on the lent machines seen so far), the GPU hidden.
if grep -q -E "amx_bf16|avx512_bf16" /proc/cpuinfo; then
  CUDA_VISIBLE_DEVICES= step native_bf16 90 python3 -m benchmarks.inference --configs r50 \
    --runs 3 --paths reference 'exact eager' 'bf16 (eager' \
    --section "Inference with native bf16 on the GPU machine's host CPU"
fi
cp docs/benchmarks.md "$out/benchmarks.md"
