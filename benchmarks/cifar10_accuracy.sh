#!/usr/bin/env bash
# The accuracy table: DeiT-tiny (timm, the twin) and the three tiny KAN-ViTs trained by main.py itself on CIFAR-10
# (ImageNet layout: $DATA/train, $DATA/val), one recipe and one number of epochs for all, one after another.
#
#   DATA=/root/cifar10 EPOCHS=8 bash benchmarks/cifar10_accuracy.sh
#   python benchmarks/accuracy_table.py output/cifar10_accuracy/*     # the markdown table
#
# Recipe: deit_configs/vit_kan_tiny_cifar10.yaml (32 px, patch 4, AdamW, cosine, RandAugment, random erasing,
# label smoothing, drop-path 0.1, bf16 autocast) shortened for a few epochs: warmup 1 epoch, no mixup/cutmix, no
# repeated augmentation (both slow early convergence), batch 256 at lr 2e-3.
set -euo pipefail
DATA=${DATA:?set DATA to the CIFAR-10 folder}
EPOCHS=${EPOCHS:-8}
RUNS=${RUNS:-output/cifar10_accuracy}
MODELS=${MODELS:-deit_tiny_patch16_224 vit_kan_tiny vit_fasterkan_tiny vit_grkan_tiny}
for model in $MODELS; do
  python main.py --config deit_configs/vit_kan_tiny_cifar10.yaml --model "$model" --data-path "$DATA" \
    --epochs "$EPOCHS" --warmup-epochs 1 --no-repeated-aug --mixup 0 --cutmix 0 --batch-size 256 --lr 2.0e-3 \
    --num-workers "${WORKERS:-12}" --output-dir "$RUNS/$model" --overwrite
done
