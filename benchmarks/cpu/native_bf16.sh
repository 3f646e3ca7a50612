#!/usr/bin/env bash
# bf16 on a CPU that has it natively (AMX or AVX-512 BF16), e.g. a GPU machine's host CPU:
# inference speed against eager fp32 (every exact path and bf16 eager and compiled), CamVid
# argmax agreement, and the 50-step training curves. The three share a budget of SECONDS
# (default 570) in fixed parts, 74/10/16%; each is stopped at the end of its part.
# Usage: bash benchmarks/cpu/native_bf16.sh OUT_DIR [CAMVID_ROOT] [SECONDS]
# Writes its sections into docs/benchmarks.md there and copies that file to OUT_DIR.
set -uo pipefail
out=${1:?usage: native_bf16.sh OUT_DIR [CAMVID_ROOT] [SECONDS]} root=${2:-../shared/data/camvid}
seconds=${3:-570}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=
mkdir -p "$out"
{ grep -m1 "model name" /proc/cpuinfo; nproc; grep -o -E "amx_bf16|avx512_bf16" /proc/cpuinfo | sort -u; } | tee "$out/cpu.txt"
grep -q -E "amx_bf16|avx512_bf16" /proc/cpuinfo || { echo "no native bf16 on this CPU"; exit 0; }
# Every exact fp32 path too: the fastest one is what `auto` should pick on this kind of CPU.
timeout $((seconds * 74 / 100)) python3 -m benchmarks.cpu.inference --configs r50 \
  --paths reference exact bf16 --section "Inference with native bf16" > "$out/inference.log" 2>&1
echo "inference exit $?"
timeout $((seconds * 10 / 100)) python3 -m benchmarks.cpu.camvid_precision --root "$root" \
  --paths bf16 --section "CamVid: agreement of native bf16" > "$out/precision.log" 2>&1
echo "precision exit $?"
timeout $((seconds * 16 / 100)) python3 -m benchmarks.cpu.train_precision \
  --set data.root="$root" --section "CPU training options, native bf16" > "$out/train.log" 2>&1
echo "train exit $?"
cp docs/benchmarks.md "$out/benchmarks.md"
