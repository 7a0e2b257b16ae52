"""Parameters and GMACs (fvcore) of every registered vision_kan model and the DeiT twins, as a markdown table.

    python benchmarks/model_table.py                 # each model at its default input size (224 px for ViTs)
    python benchmarks/model_table.py --pattern 'vit_*'

GMACs follow fvcore's convention (torch's FlopCounterMode / 2 where fvcore cannot trace a model) (one multiply-add counts one "flop"; DeiT-tiny 1.26), with attention counted
through timm's plain attention path (fvcore cannot see inside scaled_dot_product_attention). Basis evaluations
(elementwise) are not counted; the KAN layers' matmuls over the d*K basis are.
"""
import argparse
import logging

import timm

import vision_kan
from vision_kan.train.model_factory import count_macs

TWINS = ['deit_tiny_patch16_224', 'deit_small_patch16_224', 'deit_base_patch16_224']


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
        macs, counter = count_macs(model, size)
        print(f'| {name} | {params:.2f} | {macs:.2f} | {size[-1]} px | {counter} |', flush=True)


if __name__ == '__main__':
    main()
