#!/usr/bin/env bash
# Issue 14's speed table (README "Where issue 14's targets stand") from one session's device calls: each PART fits
# one call of at most 10 minutes on one H100/H200 and writes its raw output under $RESULTS (default
# benchmarks/results/issue14_table_<date>); run the parts back to back, one a call.
#
#   PART=tiny     bash benchmarks/issue14_table.sh   # 224 px, batch 256: DeiT-tiny, GR-KAN / KAN / FasterKAN tiny
#                                                    # and vit_kan_tiny mlp_ratio 4, eager and compiled, 3 rounds each
#   PART=base     bash benchmarks/issue14_table.sh   # 224 px, batch 128: DeiT-base against vit_grkan_base and
#                                                    # vit_kan_base, eager and compiled
#   PART=small32  bash benchmarks/issue14_table.sh   # 32 px / patch 4, batch 256: step, host and GPU ms (--profile),
#                                                    # eager and with CUDA graphs (reduce-overhead)
#   PART=numerics bash benchmarks/issue14_table.sh   # fused against reference, bf16 and fp32 (kan_compile_check.py)
#
# Every ratio is to the DeiT twin of the same part, same mode, same call. Needs a CUDA GPU (exit 2 without one).
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="$(cd .. && pwd)${PYTHONPATH:+:$PYTHONPATH}"
PART=${PART:-tiny}
RESULTS=${RESULTS:-results/issue14_table_$(date +%F)}
if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "issue14_table.sh: needs a CUDA GPU (torch.cuda.is_available() is False)" >&2
  exit 2
fi
mkdir -p "$RESULTS"
common=(--backends auto --no-layers --no-macs --no-kernels --steps 10 --warmup 3)
case "$PART" in
  tiny)
    models=(deit_tiny_patch16_224 vit_grkan_tiny vit_kan_tiny vit_fasterkan_tiny 'vit_kan_tiny@mlp_ratio=4')
    for mode in eager compiled; do
      python bench_vit.py --models "${models[@]}" --modes "$mode" --rounds 3 "${common[@]}" \
        2>&1 | tee "$RESULTS/tiny_224_$mode.txt"
    done ;;
  base)
    for mode in eager compiled; do
      python bench_vit.py --baseline deit_base_patch16_224 \
        --models deit_base_patch16_224 vit_grkan_base vit_kan_base --modes "$mode" --batch-size 128 --rounds 2 \
        "${common[@]}" 2>&1 | tee "$RESULTS/base_224_$mode.txt"
    done ;;
  small32)
    models=(deit_tiny_patch16_224 vit_grkan_tiny vit_kan_tiny vit_fasterkan_tiny)
    python bench_vit.py --models "${models[@]}" --img-size 32 --patch-size 4 --modes eager --profile \
      "${common[@]}" 2>&1 | tee "$RESULTS/small32_eager.txt"
    python bench_vit.py --models "${models[@]}" --img-size 32 --patch-size 4 --modes compiled \
      --compile-mode reduce-overhead --profile "${common[@]}" 2>&1 | tee "$RESULTS/small32_cudagraphs.txt" ;;
  numerics)
    for dtype in bf16 fp32; do
      python kan_compile_check.py --dtype "$dtype" 2>&1 | tee "$RESULTS/numerics_$dtype.txt"
    done ;;
  *)
    echo "issue14_table.sh: PART must be tiny, base, small32 or numerics, got '$PART'" >&2
    exit 2 ;;
esac
