#!/usr/bin/env bash
# The paper's ablation grid (tables 1 and 2, two seeds, 22 runs) on one GPU in one go: two
# shards train side by side into one grid folder, then one report covers both.
#
# Beforehand:  python -m benchmarks.gpu.camvid pack ../shared/data/camvid .gpu/camvid
# On the GPU machine, .gpu copied there:  bash benchmarks/gpu/ablation.sh OUT .gpu/camvid [SECONDS]
# Afterwards: copy OUT/results into docs/results/ and rebuild the report with
#   pspnet reproduce ablation --budget gpu --out docs/results/ablation_camvid_gpu --report-only
# A shard stopped by SECONDS (default 480) leaves its finished runs' results; the grid resumes
# where a later run finds them (copy the folder back into $grid first).
# BUDGET=tiny runs the same steps with the test budget on the CPU (a check of this script).
set -uo pipefail
out=${1:?usage: ablation.sh OUT_DIR [CAMVID_ROOT] [SECONDS]} root=${2:-.gpu/camvid}
seconds=${3:-480} budget=${BUDGET:-gpu} grid=${GRID:-/tmp/ablation_$budget}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$out" "$grid"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
} | tee "$out/machine.txt"
start=$SECONDS
for shard in 0 1; do
  timeout "$seconds" python3 -m pspnet reproduce ablation --dataset camvid --root "$root" \
    --budget "$budget" --out "$grid" --shard "$shard/2" > "$out/shard$shard.log" 2>&1 &
done
wait
echo "grid: $((SECONDS - start)) s" | tee -a "$out/machine.txt"
python3 -m pspnet reproduce ablation --dataset camvid --budget "$budget" --out "$grid" \
  --report-only | tee -a "$out/machine.txt"
cp "$grid/ablation.md" "$grid/ablation.png" "$out/" 2>/dev/null
for run in "$grid"/*/; do
  [ -f "$run/result.json" ] || continue
  mkdir -p "$out/results/$(basename "$run")"
  cp "$run/result.json" "$out/results/$(basename "$run")/"
done
