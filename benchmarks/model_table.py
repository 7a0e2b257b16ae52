"""Parameters and GMACs (fvcore) of every registered vision_kan model and the DeiT twins, as a markdown table.

    python benchmarks/model_table.py                 # each model at its default input size (224 px for ViTs)
    python benchmarks/model_table.py --pattern 'vit_*'

GMACs follow fvcore's convention (torch's FlopCounterMode / 2 where fvcore cannot trace a model) (one multiply-add counts one "flop"; DeiT-tiny 1.26), with attention counted
through timm's plain attention path (fvcore cannot see inside scaled_dot_product_attention). Basis evaluations
(elementwise) are not counted; the KAN layers' matmuls over the d*K basis are.
"""
import argparse
import logging
from typing import Tuple

import timm
import torch
from fvcore.nn import FlopCountAnalysis
from torch.utils.flop_counter import FlopCounterMode

import vision_kan

TWINS = ['deit_tiny_patch16_224', 'deit_small_patch16_224', 'deit_base_patch16_224']


def gmacs(model: torch.nn.Module, input_size) -> Tuple[float, str]:
    """(GMACs, counter): fvcore, or torch's FlopCounterMode / 2 where fvcore cannot trace the model (conv-KAN's
    autograd function); the two agree to 0.4 % on models both can count."""
    for m in model.modules():
        if hasattr(m, 'fused_attn'):
            m.fused_attn = False
    x = torch.randn(1, *input_size)
    try:
        analysis = FlopCountAnalysis(model.eval(), x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return analysis.total() / 1e9, 'fvcore'
    except RuntimeError:
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
        return counter.get_total_flops() / 2e9, 'torch'


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pattern', default='*')
    parser.add_argument('--no-twins', dest='twins', action='store_false')
    args = parser.parse_args()
    logging.getLogger('fvcore').setLevel(logging.ERROR)
    names = (TWINS if args.twins else []) + vision_kan.list_models(args.pattern)
    print('| model | params (M) | GMACs | input | counted by |')
    print('|---|---|---|---|---|')
    for name in names:
        model = timm.create_model(name)
        size = model.pretrained_cfg['input_size']
        params = sum(p.numel() for p in model.parameters()) / 1e6
        with torch.no_grad():
            macs, counter = gmacs(model, size)
        print(f'| {name} | {params:.2f} | {macs:.2f} | {size[-1]} px | {counter} |', flush=True)


if __name__ == '__main__':
    main()
