"""Int8 evaluation on the CPU: dynamic quantization of nn.Linear, weight-only int8 for the KAN layers' weights.

    python -m vision_kan.tools.quantize --checkpoint output/kan_cnn4/best.pth --data-path data/cifar10/val
    python main.py --eval --resume output/kan_cnn4/best.pth --model kan_cnn4 --data-path DATA --quantize int8

Two methods, each where it truly runs:

* every `nn.Linear` -> torch's dynamic quantization (int8 weights, activations quantized on the fly per batch,
  int8 matmul kernels: fbgemm / x86 / qnnpack). Attention and MLP projections, linear heads.
* every other weight tensor of two or more dims (the KAN layers' base / spline / basis / poly weights and spline
  scalers, conv weights) -> weight-only int8: stored as int8 with one fp32 scale per output row (symmetric,
  scale = max|w| / 127), dequantized to fp32 right before its module runs and dropped after. KAN layers compute
  their basis and matmuls in fp32 on these weights; torch has no int8 kernels for them.

Biases, norms, grids, position embeddings and basis parameters (Gram beta, rational coefficients) stay fp32. The
quantized model is for inference only (no gradients; a weight is readable only while its module runs). Sizes are
those of the saved state_dict.
"""
import argparse
import json
import sys
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..train.config import ArgumentParser
from ..train.errors import run_cli
from ..train.model_factory import count_params
from ..train.offline_eval import (
    device_description, evaluate_model, imagefolder_loader, model_from_checkpoint, model_size_mb,
)

__all__ = ['quantize_int8', 'quantize_weight_int8', 'Int8Report', 'main']

Int8Report = Dict[str, Any]
_MIN_NUMEL = 256  # smaller tensors (e.g. rational coefficients) stay fp32: int8 would save nothing


def _quantize_rows(w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8: w (O, ...) -> (q int8 like w, scale (O,) fp32), w ~ q * scale."""
    rows = w.detach().float().reshape(w.shape[0], -1)  # (O, rest)
    scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(rows / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


def _dequantize(module: nn.Module, _inputs) -> None:
    """Forward pre-hook: module.<name> = int8 weight * scale (fp32), for the module's own forward to read."""
    for name in module._int8_weights:
        q, scale = getattr(module, f'{name}_int8'), getattr(module, f'{name}_scale')
        shape = (-1,) + (1,) * (q.dim() - 1)
        object.__setattr__(module, name, q.float() * scale.view(shape))


def _release(module: nn.Module, _inputs, _output) -> None:
    """Forward hook: drop the fp32 copies again (only the int8 weights stay resident)."""
    for name in module._int8_weights:
        module.__dict__.pop(name, None)


def quantize_weight_int8(module: nn.Module, name: str) -> None:
    """Replace parameter `name` of `module` by int8 buffers `<name>_int8`, `<name>_scale` (weight-only int8)."""
    q, scale = _quantize_rows(getattr(module, name))
    del module._parameters[name]
    module.register_buffer(f'{name}_int8', q)
    module.register_buffer(f'{name}_scale', scale)
    if not hasattr(module, '_int8_weights'):
        module._int8_weights = []
        module.register_forward_pre_hook(_dequantize)
        module.register_forward_hook(_release)
    module._int8_weights.append(name)


def _dynamic_linear(model: nn.Module) -> Tuple[nn.Module, int]:
    """torch's dynamic int8 quantization of every nn.Linear; (model, 0) where this torch cannot run it."""
    n = sum(1 for m in model.modules() if type(m) is nn.Linear)
    if n == 0:
        return model, 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch.ao.quantization's deprecation notice
            probe = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(4, 4)), {nn.Linear})
            probe(torch.zeros(1, 4))  # the int8 kernels run on this machine
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8), n
    except (AttributeError, RuntimeError, NotImplementedError):
        return model, 0


def _is_dynamic_linear(m: nn.Module) -> bool:
    dynamic = getattr(getattr(getattr(torch.ao.nn, 'quantized', None), 'dynamic', None), 'Linear', None)
    return dynamic is not None and isinstance(m, dynamic)


def quantize_int8(model: nn.Module, dynamic: bool = True) -> Tuple[nn.Module, Int8Report]:
    """An int8 copy of `model` for CPU inference, and what was done.

    Args:
        model: a float model (left unchanged).
        dynamic: use torch's dynamic quantization for nn.Linear (else they get weight-only int8 too).

    Returns:
        (quantized model in eval mode on the CPU, report) with report = {'size_mb_fp32', 'size_mb_int8',
        'dynamic_linear' (modules), 'weight_only' (tensors), 'int8_params', 'fp32_params'}.
    """
    import copy
    size_before = model_size_mb(model)
    model = copy.deepcopy(model).cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    n_dynamic = 0
    if dynamic:
        model, n_dynamic = _dynamic_linear(model)
    weight_only: List[Tuple[nn.Module, str]] = []
    for module in model.modules():
        if type(module) is nn.Linear and n_dynamic:
            continue  # already replaced (quantize_dynamic swaps exact nn.Linear only)
        for name, p in module.named_parameters(recurse=False):
            if p.dim() >= 2 and p.numel() >= _MIN_NUMEL and ('weight' in name or 'scaler' in name):
                weight_only.append((module, name))
    int8_params = sum(getattr(m, n).numel() for m, n in weight_only)
    for module, name in weight_only:
        quantize_weight_int8(module, name)
    int8_params += sum(m.weight().numel() for m in model.modules() if _is_dynamic_linear(m))
    report = {'size_mb_fp32': size_before, 'size_mb_int8': model_size_mb(model), 'dynamic_linear': n_dynamic,
              'weight_only': len(weight_only), 'int8_params': int8_params,
              'fp32_params': count_params(model, trainable_only=False)}
    return model, report


def describe(report: Int8Report) -> str:
    return (f'int8: {report["dynamic_linear"]} nn.Linear dynamically quantized, {report["weight_only"]} weight '
            f'tensors weight-only int8 ({report["int8_params"] / 1e6:.3f}M int8 values, '
            f'{report["fp32_params"] / 1e6:.3f}M left fp32); size {report["size_mb_fp32"]:.2f} MB -> '
            f'{report["size_mb_int8"]:.2f} MB')


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser('python -m vision_kan.tools.quantize', description=__doc__.split('\n\n')[0], allow_abbrev=False)
    p.add_argument('--checkpoint', required=True, help='a main.py checkpoint (best.pth)')
    p.add_argument('--data-path', required=True, help='one ImageFolder, e.g. DATA/val')
    p.add_argument('--model', default=None, help='model name, for a checkpoint without main.py config')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--num-workers', type=int, default=0)
    p.add_argument('--no-dynamic', dest='dynamic', action='store_false',
                   help='weight-only int8 for nn.Linear too, instead of dynamic quantization')
    p.add_argument('--output-json', default=None, help='write the results here')
    return p


def run(args: argparse.Namespace, log=print) -> Dict[str, Any]:
    model, info = model_from_checkpoint(args.checkpoint, args.model, what='--checkpoint')
    size = info['input_size'] or model.pretrained_cfg.get('input_size', (3, 224, 224))[-1]
    loader = imagefolder_loader(args.data_path, size, info['eval_crop_ratio'], args.batch_size, args.num_workers)
    cpu = torch.device('cpu')
    before = evaluate_model(model, loader, cpu)
    qmodel, report = quantize_int8(model, dynamic=args.dynamic)
    after = evaluate_model(qmodel, loader, cpu)
    log(describe(report))
    log(f'| {info["model"]} | size (MB) | top-1 (%) | top-5 (%) | loss | img/s |\n|---|---|---|---|---|---|')
    for label, stats, mb in (('fp32', before, report['size_mb_fp32']), ('int8', after, report['size_mb_int8'])):
        log(f'| {label} | {mb:.2f} | {stats["acc1"]:.2f} | {stats["acc5"]:.2f} | {stats["loss"]:.4f} | '
            f'{stats["img_per_s"]:.1f} |')
    log(f'top-1 change {after["acc1"] - before["acc1"]:+.2f} points on {before["n"]} images; '
        f'{device_description(cpu)}')
    result = {'checkpoint': args.checkpoint, 'model': info['model'], 'fp32': before, 'int8': after, **report}
    if args.output_json:
        with open(args.output_json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == '__main__':
    sys.exit(main())
