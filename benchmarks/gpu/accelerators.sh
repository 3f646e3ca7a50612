#!/usr/bin/env bash
# Every GPU and native-bf16 measurement in one run on a GPU machine: training throughput of our
# loop's best settings against eager fp32, bf16 against fp32 CamVid accuracy, every inference
# path on the GPU (with CamVid agreement), then native bf16 on the host CPU. The steps share a
# budget of SECONDS (default 510) in fixed parts, 25/25/30/12/8%; a step still running at the
# end of its part is stopped, and since each script rewrites its docs section after every row,
# it keeps what it finished.
#
# Beforehand:  python -m benchmarks.gpu.camvid pack ../shared/data/camvid .gpu/camvid
#   and, for CamVid agreement on a well-trained model, a CamVid checkpoint into .gpu/ (e.g. a
#   finished run of `pspnet reproduce ablation --budget cpu`: b1236-avg-dr-seed0/best.safetensors).
# On the GPU machine:  bash benchmarks/gpu/accelerators.sh OUT .gpu/camvid [CKPT] [SECONDS]
#   (without CKPT, or with '', the agreement uses the short fp32 GPU run below, a barely
#   trained model).
# Afterwards, copy OUT/benchmarks.md's new sections into docs/benchmarks.md.
set -uo pipefail
out=${1:?usage: accelerators.sh OUT_DIR [CAMVID_ROOT] [CHECKPOINT] [SECONDS]}
root=${2:-.gpu/camvid} checkpoint=${3:-/tmp/accuracy/fp32/last.pt} seconds=${4:-510}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$out"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
  grep -m1 "model name" /proc/cpuinfo; nproc; grep -o -E "amx_bf16|avx512_bf16" /proc/cpuinfo | sort -u
} 2>&1 | tee "$out/machine.txt"

share() {  # share PERCENT: that part of the budget, in seconds
  echo $((seconds * $1 / 100))
}

step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? after ${SECONDS}s in all" | tee -a "$out/machine.txt"
}

step train_speed "$(share 25)" python3 -m benchmarks.gpu.training speed --root "$root" \
  --warmup 10 --steps 30 --workers 12
step train_accuracy "$(share 25)" python3 -m benchmarks.gpu.training accuracy --root "$root" \
  --iterations 200 --workers 12 --keep /tmp/accuracy
agreement=()
[ -f "$checkpoint" ] && agreement=(--checkpoint "$checkpoint" --camvid "$root")
inference=$(share 30)  # the script's own budget leaves it time to finish the path it is on
step inference "$inference" python3 -m benchmarks.gpu.inference --runs 10 \
  --budget "$((inference * 87 / 100))" --rows "$out/inference_rows.jsonl" "${agreement[@]}"
# Native bf16 on the host CPU (AMX on the Intel Xeon hosts measured so far), the GPU hidden.
if grep -q -E "amx_bf16|avx512_bf16" /proc/cpuinfo; then
  CUDA_VISIBLE_DEVICES= step native_bf16 "$(share 12)" python3 -m benchmarks.cpu.inference \
    --configs r50 --runs 3 --paths reference 'exact eager' 'bf16 (eager' \
    --section "Inference with native bf16 on the GPU machine's host CPU"
  [ -f "$checkpoint" ] && CUDA_VISIBLE_DEVICES= step native_bf16_camvid "$(share 8)" python3 -m \
    benchmarks.cpu.camvid_precision --checkpoint "$checkpoint" --root "$root" --paths bf16 \
    --section "CamVid: agreement of native bf16 on the GPU machine's host CPU"
fi
cp docs/benchmarks.md "$out/benchmarks.md"
