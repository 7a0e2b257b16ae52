#!/usr/bin/env bash
# The multi-GPU run (issue 9), for a machine with 2 GPUs (e.g. the nvidia-h200-x2 kind): vit_kan_tiny on CIFAR-10
# (ImageNet layout, 32 px, patch 4) with fp16 autocast, EMA and a KAN grid update inside the run, trained for
# $EPOCHS epochs on 1 GPU and then on 2 GPUs through torchrun/NCCL in the same call; every rank prints digests of its
# parameters and KAN grids; rank 0's 2-GPU checkpoint is then resumed on 1 GPU for one more epoch.
#
#   DATA=/root/cifar10 bash benchmarks/multi_gpu_check.sh       # prints the table at the end
#   DATA=/root/cifar10 DATA_BACKEND=gpu EXTRA=--data-on-gpu bash benchmarks/multi_gpu_check.sh   # GPU data backend
#
# CHECK_DIR is where the runs go (default output/multi_gpu_check); DATA_BACKEND is main.py's --data-backend (pil or
# gpu, default pil). EXTRA adds main.py flags (a CPU smoke test: EXTRA="--device cpu --no-amp --batch-size 8
# --num-workers 0").
# Leave the NVLink-multicast variables of the machine as they are (NCCL_NVLS_ENABLE=0 etc.).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?set DATA to an ImageNet-layout folder}
EPOCHS=${EPOCHS:-2}
CHECK_DIR=${CHECK_DIR:-output/multi_gpu_check}
DATA_BACKEND=${DATA_BACKEND:-pil}
COMMON=(--config deit_configs/vit_kan_tiny_cifar10.yaml --data-path "$DATA" --epochs "$EPOCHS" --warmup-epochs 1
        --amp --amp-dtype float16 --model-ema --model-ema-decay 0.999 --grid-update-epochs 1 --grid-update-eps 1
        --batch-size 256 --num-workers "${WORKERS:-8}" --print-state-hash --overwrite --data-backend "$DATA_BACKEND"
        ${EXTRA:-})
for n in 1 2; do
  echo "=== $n GPU(s)"
  python -m torch.distributed.run --standalone --nproc_per_node=$n main.py "${COMMON[@]}" --output-dir "$CHECK_DIR/gpus$n" 2>&1 \
    | tee "$CHECK_DIR.gpus$n.txt" | grep -E '^state rank|^epoch [0-9]+/|KAN grids|^error'
done
echo "=== resume the 2-GPU checkpoint on 1 GPU"
python main.py --config "$CHECK_DIR/gpus2/config.yaml" --resume "$CHECK_DIR/gpus2/checkpoint.pth" --epochs $((EPOCHS + 1)) \
  --output-dir "$CHECK_DIR/gpus2" --no-print-state-hash ${EXTRA:-} 2>&1 | grep -E '^epoch [0-9]+/|^error'
python - "$CHECK_DIR" "$EPOCHS" <<'PY'
import json, sys
out, epochs = sys.argv[1], int(sys.argv[2])
speed = {}
for n in (1, 2):
    rows = [json.loads(l) for l in open(f'{out}/gpus{n}/log.txt') if l.strip()]
    speed[n] = rows[epochs - 1]['train_img_per_s']  # the last epoch of the run, after the grid update
lines = [l.split(': ', 1) for l in open(f'{out}.gpus2.txt') if l.startswith('state rank')]
digests = {}
for who, digest in lines:
    digests.setdefault(who.split()[-1], set()).add(digest.strip())
resumed = [json.loads(l) for l in open(f'{out}/gpus2/log.txt') if l.strip()][-1]
print(f'\n| GPUs | train img/s (epoch {epochs}) | scaling |\n|---|---|---|')
print(f'| 1 | {speed[1]:.0f} | 1.00 |\n| 2 | {speed[2]:.0f} | {speed[2] / speed[1]:.2f} |')
for label, ds in sorted(digests.items()):
    print(f'{label}: {"identical on every rank" if len(ds) == 1 else "DIFFERENT across ranks"} {sorted(ds)}')
print(f'resumed on 1 GPU: epoch {resumed["epoch"]}, val top-1 {resumed["test_acc1"]:.2f}, '
      f'train loss {resumed["train_loss"]:.4f}')
if len(digests) != 2 or any(len(ds) != 1 for ds in digests.values()) or resumed['epoch'] != epochs + 1:
    sys.exit('error: the replicas differ (or a digest or the resumed epoch is missing)')
PY
