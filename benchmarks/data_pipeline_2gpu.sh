#!/usr/bin/env bash
# The GPU data pipeline on one host with 2 GPUs, in one call (issue 13): the 1-GPU table on GPU 0 alone (224 px:
# synthetic, gpu in a thread, gpu in the data process; 32 px: the same plus --data-on-gpu), the 2-GPU rows at 224 px
# (torchrun, img/s summed over the ranks), then benchmarks/multi_gpu_check.sh on the generated 32 px JPEGs with the
# GPU backend (replica digests, the 2-GPU checkpoint resumed on 1 GPU).
#
#   RESULTS=/some/dir bash benchmarks/data_pipeline_2gpu.sh     # logs and tables land in RESULTS
#
# RESULTS: where the logs go (default output/data_pipeline_2gpu); ROOT: where the JPEGs are made (default
# /tmp/vk_bench_data); MODELS: the 224 px models; WORKERS: DataLoader workers per GPU (default 14); BACKENDS, WARMUP,
# STEPS, IMAGES: below; PARTS: which of
# the four parts to run (default 1,2,3,4: 1-GPU 224 px, 2-GPU 224 px, 1-GPU 32 px, multi-GPU check; the check
# needs the 32 px JPEGs that part 3 makes), so that the whole fits in calls of 10 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-output/data_pipeline_2gpu}
ROOT=${ROOT:-/tmp/vk_bench_data}
MODELS=${MODELS:-deit_tiny_patch16_224,vit_grkan_tiny}
WORKERS=${WORKERS:-14}
mkdir -p "$RESULTS"
# STEPS timed steps after WARMUP (default 8 + 40) of 256 on each of 2 ranks: IMAGES files (default 2 x 48 x 256)
WARMUP=${WARMUP:-8}
STEPS=${STEPS:-40}
IMAGES=${IMAGES:-$((2 * (WARMUP + STEPS) * 256))}
BACKENDS=${BACKENDS:-synthetic,gpu,gpu-process,gpu-process2}  # the 224 px rows (bench_data_pipeline.py's keys)
BENCH=(benchmarks/bench_data_pipeline.py --root "$ROOT" --images "$IMAGES" --workers "$WORKERS" --warmup "$WARMUP"
       --steps "$STEPS")
PARTS=${PARTS:-1,2,3,4}
quiet() { grep -E '^#|^\||^[A-Z].*torch|failed|rror'; }
part() { [[ ",$PARTS," == *",$1,"* ]]; }

part 1 && {
echo "=== 1 GPU, 224 px"
CUDA_VISIBLE_DEVICES=0 python "${BENCH[@]}" --sizes 224 --models "$MODELS" --backends "$BACKENDS" \
  --stage-batches 6 2>&1 | tee "$RESULTS/gpus1_224.txt" | quiet
}
part 2 && {
echo "=== 2 GPUs, 224 px"
python -m torch.distributed.run --standalone --nproc_per_node=2 "${BENCH[@]}" --sizes 224 --models "$MODELS" \
  --backends "$BACKENDS" --stage-batches 0 2>&1 | tee "$RESULTS/gpus2_224.txt" | quiet
}
part 3 && {
echo "=== 1 GPU, 32 px"
CUDA_VISIBLE_DEVICES=0 python "${BENCH[@]}" --sizes 32 --models deit_tiny_patch16_224 \
  --backends synthetic,gpu,resident,resident-process --stage-batches 0 2>&1 | tee "$RESULTS/gpus1_32.txt" | quiet
}
part 4 && {
echo "=== multi-GPU check, GPU data backend, generated 32 px JPEGs"
DATA="$ROOT/jpeg32" DATA_BACKEND=gpu EXTRA='--data-on-gpu --data-process' CHECK_DIR=/tmp/vk_multi_gpu_check WORKERS=8 \
  bash benchmarks/multi_gpu_check.sh 2>&1 | tee "$RESULTS/multi_gpu_check.txt" | tail -8
cp /tmp/vk_multi_gpu_check.gpus*.txt "$RESULTS/" 2>/dev/null; true
}
true
