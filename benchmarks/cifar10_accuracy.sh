#!/usr/bin/env bash
# The accuracy table: DeiT-tiny (timm, the twin) and the three tiny KAN-ViTs trained by main.py itself on CIFAR-10
# (ImageNet layout: $DATA/train, $DATA/val), one recipe (deit_configs/cifar10_short.yaml) and one number of epochs for
# all, one after another.
#
#   DATA=/root/cifar10 EPOCHS=10 bash benchmarks/cifar10_accuracy.sh
#   python benchmarks/accuracy_table.py output/cifar10_accuracy/*     # the markdown table
#
# EXTRA adds main.py flags (the CPU test: EXTRA="--device cpu --no-amp --batch-size 8").
set -euo pipefail
DATA=${DATA:?set DATA to the CIFAR-10 folder}
EPOCHS=${EPOCHS:-10}
RUNS=${RUNS:-output/cifar10_accuracy}
MODELS=${MODELS:-deit_tiny_patch16_224 vit_kan_tiny vit_fasterkan_tiny vit_grkan_tiny}
for model in $MODELS; do
  python main.py --config deit_configs/cifar10_short.yaml --model "$model" --data-path "$DATA" --epochs "$EPOCHS" \
    --num-workers "${WORKERS:-12}" --output-dir "$RUNS/$model" --overwrite ${EXTRA:-}
done
