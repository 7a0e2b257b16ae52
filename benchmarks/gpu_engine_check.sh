#!/usr/bin/env bash
# GPU check of the training engine (main.py): vit_kan_tiny at 32 px, patch 4, on an ImageNet-layout CIFAR-10 subset,
# trained twice for a couple of epochs - fp16 autocast with torch.amp.GradScaler, then bf16 autocast - with the EMA
# and a KAN grid update after epoch 1 on. Prints each run's final train loss (must be finite), val top-1 and
# train images/s, and exits non-zero if a run fails or a loss is not finite. About a minute on one H100.
#
#   cp -r ../shared/data/cifar10-mini .data/ && bash benchmarks/gpu_engine_check.sh
#
# Overrides (environment): DATA (default .data/cifar10-mini), OUT (.data/gpu_engine_check), EPOCHS (2),
# DEVICE (cuda), PYTHON (python), EXTRA (more main.py flags). A CPU smoke test of this script:
#   DEVICE=cpu EPOCHS=1 DATA=/tmp/tiny EXTRA="--batch-size 8 --num-workers 0" bash benchmarks/gpu_engine_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-.data/cifar10-mini}
OUT=${OUT:-.data/gpu_engine_check}
EPOCHS=${EPOCHS:-2}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python}
EXTRA=${EXTRA:-}

if [ ! -d "$DATA/train" ]; then
    echo "error: $DATA/train not found (copy ../shared/data/cifar10-mini to .data/ first)" >&2
    exit 2
fi
"$PYTHON" -c "import torch, timm; print(f'torch {torch.__version__}, timm {timm.__version__}, cuda ' \
+ (torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'))"

for dtype in float16 bfloat16; do
    echo "=== vit_kan_tiny, --amp --amp-dtype $dtype, $EPOCHS epochs on $DEVICE"
    rm -rf "${OUT:?}/$dtype"
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    "$PYTHON" main.py --config deit_configs/vit_kan_tiny_cifar10.yaml --data-path "$DATA" \
        --output-dir "$OUT/$dtype" --device "$DEVICE" --epochs "$EPOCHS" --warmup-epochs 1 \
        --amp --amp-dtype "$dtype" --num-workers 8 --print-freq 20 \
        --model-ema --model-ema-decay 0.99 --grid-update-epochs 1 $EXTRA
done

"$PYTHON" - "$OUT" <<'EOF'
import json, math, sys
from pathlib import Path
out, ok = Path(sys.argv[1]), True
print(f'\n{"amp dtype":<10} {"epochs":>6} {"train loss":>11} {"val acc1":>9} {"train img/s":>12}')
for dtype in ('float16', 'bfloat16'):
    rows = [json.loads(line) for line in (out / dtype / 'log.txt').read_text().splitlines()]
    last = rows[-1]
    finite = all(math.isfinite(r['train_loss']) and math.isfinite(r['test_loss']) for r in rows)
    ok &= finite
    print(f'{dtype:<10} {last["epoch"]:>6} {last["train_loss"]:>11.4f} {last["test_acc1"]:>9.2f} '
          f'{last["train_img_per_s"]:>12.0f}{"" if finite else "  NOT FINITE"}')
sys.exit(0 if ok else 1)
EOF
