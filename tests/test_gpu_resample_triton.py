"""The Triton crop + resize (vision_kan.train.gpu_resample_triton) against the float32 matmul path (resample_boxes),
and the compact tap weights (bicubic_taps) against the dense weights they replace.

The kernels run on CPU through Triton's interpreter, which must be switched on (TRITON_INTERPRET=1) before Triton is
imported: this file runs itself as a subprocess with that variable set (`python tests/test_gpu_resample_triton.py`
prints one JSON line of measures per case) and the tests below assert on that report. Images are uint8 noise (the
worst case for rounding ties) of 12-60 px, outputs 16-24 px.

Tolerances: float32 output within 1e-3 of a level of the matmul path (same products, other summation order); uint8
output within 1 level everywhere and equal for >= 99% of the pixels (values within float32 noise of a .5 tie may
round either way). Where every weight is a short dyadic fraction (an exact 2x upscale, all taps inside the box) both
paths are exact, so their uint8 outputs are equal everywhere, ties (x.5, rounded half to even) included.
"""
import importlib.util
import json
import os
import sys
import time
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F

from conftest import run_interpreter_worker
from vision_kan.train.gpu_resample import (ResampleAxis, _axis_table, _cubic, bicubic_taps, bicubic_weights,
                                           resample_boxes)

HAS_TRITON = importlib.util.find_spec('triton') is not None
F32_TOL = 1e-3         # levels, float32 output
U8_EXACT = 0.99        # fraction of uint8 pixels equal to the matmul path's
FP16_TMP_TOL = 0.25    # levels, float32 output with a float16 intermediate


def axis(start, length, resized, offset, flip, reflect=None) -> ResampleAxis:
    t = lambda v: torch.tensor(v)  # noqa: E731
    return ResampleAxis(t(start), t(length), t(resized), t(offset), t(flip), None if reflect is None else t(reflect))


def noise_images(sizes, seed: int) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]


# ------------------------------------------------------------------------------------------------------------------
# Cases: (images, ay, ax, out_size); images a list of (3, H_i, W_i) or a (B, 3, H, W) tensor
# ------------------------------------------------------------------------------------------------------------------

def _random_boxes(sizes, out_size: int, seed: int):
    """RandomResizedCrop-like: per sample a random box (4 px to the whole image), resized to out_size (down- and
    upscales), random flips on both axes."""
    g = torch.Generator().manual_seed(seed)
    axes = []
    for dim in (0, 1):
        side = torch.tensor([s[dim] for s in sizes])
        length = 4 + (torch.rand(len(sizes), generator=g) * (side - 3).double()).long().clamp(max=side - 4)
        start = (torch.rand(len(sizes), generator=g) * (side - length + 1).double()).long()
        flip = torch.rand(len(sizes), generator=g) < 0.5
        axes.append(ResampleAxis(start, length, torch.full_like(length, out_size), torch.zeros_like(length), flip))
    return axes


def _cases() -> Dict[str, tuple]:
    sizes = [(40, 50), (30, 60), (56, 24), (20, 21)]
    cases = {}
    # fixed boxes: 35x40 -> 20 (down), 12x10 -> 20 (up, flipped), 56x24 -> 20 (3.5x down in y: 16 taps; up in x),
    # the whole 20x21 image -> 20 with both flips
    cases['rrc_list'] = (noise_images(sizes, 0),
                         axis([2, 9, 0, 0], [35, 12, 56, 20], [20] * 4, [0] * 4, [False, True, False, True]),
                         axis([5, 30, 0, 0], [40, 10, 24, 21], [20] * 4, [0] * 4, [False, False, True, True]), 20)
    rand_sizes = [(44, 36), (17, 52), (60, 60)]
    ay, ax = _random_boxes(rand_sizes, 24, seed=1)
    cases['random_boxes_list'] = (noise_images(rand_sizes, 1), ay, ax, 24)
    ay, ax = _random_boxes([(36, 44)] * 3, 16, seed=2)
    cases['tensor_input'] = (torch.stack(noise_images([(36, 44)] * 3, 2)), ay, ax, 16)
    # the images are read where they lie (a table of addresses): views that are not contiguous (a crop of a larger
    # image, a channels-last tensor) must read the right pixels
    views = [im[:, 3:33, 5:45] for im in noise_images([(40, 52), (36, 48)], 6)] + noise_images([(30, 40)], 7)
    ay, ax = _random_boxes([(30, 40)] * 3, 16, seed=3)
    cases['strided_views'] = (views, ay, ax, 16)
    channels_last = torch.stack(noise_images([(30, 40)] * 2, 8)).contiguous(memory_format=torch.channels_last)
    ay, ax = _random_boxes([(30, 40)] * 2, 16, seed=4)
    cases['channels_last_tensor'] = (channels_last, ay, ax, 16)
    # torchvision RandomCrop(20, padding=4): the whole image at scale 1, window offsets in [-4, 4]; rows and columns
    # of the padding have no tap inside the box (0)
    cases['zero_padding'] = (noise_images([(20, 20), (20, 20), (24, 22)], 3),
                             axis([0, 0, 0], [20, 20, 24], [20, 20, 24], [-4, 4, -2], [False, True, False]),
                             axis([0, 0, 0], [20, 20, 22], [20, 20, 22], [4, -4, 0], [False, False, True]), 20)
    # ThreeAugment's crop: shorter side resized to 20, then RandomCrop(20, padding=4, padding_mode='reflect')
    cases['reflect'] = (noise_images([(30, 40), (45, 25), (20, 20)], 4),
                        axis([0, 0, 0], [30, 45, 20], [20, 36, 20], [-4, 12, 4], [False, False, True], [True] * 3),
                        axis([0, 0, 0], [40, 25, 20], [26, 20, 20], [10, -3, -4], [True, False, False], [True] * 3),
                        20)
    # exact 2x upscale (16 -> 32 px) cut to a 24 px window at offsets 3-5 (every window inside the box: q in [3, 28])
    # and an unscaled y axis: every weight a multiple of 1/128 and every tap's row sums to 1, so both paths are exact
    # (and many outputs are x.5 ties)
    cases['exact_ties'] = (noise_images([(24, 30), (26, 20), (24, 16), (30, 24)], 5),
                           axis([0, 2, 0, 6], [24] * 4, [24] * 4, [0] * 4, [False, True, False, True]),
                           axis([4, 2, 0, 8], [16] * 4, [32] * 4, [4, 3, 5, 4], [False, False, True, True]), 24)
    return cases


# ------------------------------------------------------------------------------------------------------------------
# Worker: runs under TRITON_INTERPRET=1 in a subprocess
# ------------------------------------------------------------------------------------------------------------------

def _round_half_even_clamped(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255)


def _check_case(name: str, images, ay, ax, out_size: int) -> Dict[str, float]:
    from vision_kan.train.gpu_resample_triton import resample_boxes_fused
    ref = resample_boxes(images, ay, ax, out_size, dtype=torch.float32, out_dtype=torch.float32)
    ref_u8 = resample_boxes(images, ay, ax, out_size, dtype=torch.float32, out_dtype=torch.uint8)
    f32 = resample_boxes_fused(images, ay, ax, out_size, out_dtype=torch.float32)
    u8 = resample_boxes_fused(images, ay, ax, out_size, out_dtype=torch.uint8)
    f16_tmp = resample_boxes_fused(images, ay, ax, out_size, out_dtype=torch.float32, tmp_dtype=torch.float16)
    n = len(images)
    assert f32.shape == u8.shape == (n, 3, out_size, out_size) and f32.dtype == torch.float32
    assert u8.dtype == torch.uint8
    u8_diff = (u8.int() - ref_u8.int()).abs()
    frac = f32 - f32.floor()
    out = {'f32_max': float((f32 - ref).abs().max()),
           'u8_max': float(u8_diff.max()),
           'u8_exact': float((u8_diff == 0).double().mean()),
           # the kernel's own rounding: its uint8 output is its float32 output rounded half to even and clamped
           'u8_vs_own_f32': float((u8.double() - _round_half_even_clamped(f32).double()).abs().max()),
           'fp16_tmp_max': float((f16_tmp - ref).abs().max()),
           'ties': float(((frac == 0.5) & (f32 > 0) & (f32 < 255)).sum()),
           'ties_rounded_down': float(((frac == 0.5) & (u8.double() < f32)).sum()),
           'ref_range': float(ref.max() - ref.min())}
    if name == 'zero_padding':
        padded = F.pad(torch.stack([im.float() for im in images[:2]]), (4, 4, 4, 4))  # the two 20x20 images
        want = torch.stack([padded[0, :, 0:20, 8:28], padded[1, :, 8:28, 0:20].flip(-2)])
        out['pad_vs_torchvision'] = float((f32[:2] - want).abs().max())
        out['pad_u8_vs_torchvision'] = float((u8[:2].float() - want).abs().max())
        # padding: sample 0 window rows -4..-1 and columns 20..23; sample 1 (y flipped) rows 23..20 (output rows 0-3)
        # and columns -4..-1
        out['pad_rows_zero'] = float(f32[0, :, :4].abs().max() + f32[0, :, :, -4:].abs().max()
                                     + f32[1, :, :4].abs().max() + f32[1, :, :, :4].abs().max())
    return out


def _worker() -> Dict[str, Dict[str, float]]:
    assert os.environ.get('TRITON_INTERPRET') == '1', 'the worker must run under TRITON_INTERPRET=1'
    torch.set_num_threads(1)
    from vision_kan.train.gpu_resample_triton import resample_boxes_fused
    report = {}
    for name, case in _cases().items():
        start = time.perf_counter()
        report[name] = _check_case(name, *case)
        report[name]['seconds'] = time.perf_counter() - start
    # a tmp budget of two 32-wide samples: the random boxes (widths up to ~60) run in several chunks, each sample's
    # output still lands in its own row
    from vision_kan.train import gpu_resample_triton
    budget, gpu_resample_triton._TMP_ELEMENTS = gpu_resample_triton._TMP_ELEMENTS, 3 * 24 * 32 * 2
    try:
        images, ay, ax, size = _cases()['random_boxes_list']
        widths = sorted(ax.length.tolist())
        report['chunked'] = _check_case('chunked', images, ay, ax, size)
        report['chunked']['chunks'] = float(len(gpu_resample_triton._chunks(widths, size)))
    finally:
        gpu_resample_triton._TMP_ELEMENTS = budget
    images, ay, ax, size = _cases()['rrc_list']
    errors = 0
    for bad in (dict(out_dtype=torch.float16), dict(tmp_dtype=torch.bfloat16)):
        try:
            resample_boxes_fused(images, ay, ax, size, **bad)
        except ValueError:
            errors += 1
    report['bad_dtypes'] = {'value_errors': float(errors)}
    return report


if __name__ == '__main__':
    print(json.dumps(_worker()))
    sys.exit(0)


# ------------------------------------------------------------------------------------------------------------------
# Tests (main pytest process)
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def interpreter_report() -> Dict[str, Dict[str, float]]:
    if not HAS_TRITON:
        pytest.skip('triton is not importable: the fused resample cannot run')
    return run_interpreter_worker(__file__)


CASE_NAMES = ['rrc_list', 'random_boxes_list', 'tensor_input', 'strided_views', 'channels_last_tensor', 'zero_padding',
              'reflect', 'exact_ties']


@pytest.mark.parametrize('case', CASE_NAMES)
def test_fused_matches_matmul_path(interpreter_report, case):
    """float32 within 1e-3 of a level, uint8 within 1 level and >= 99% equal, uint8 = own float32 rounded half to
    even; a float16 intermediate within 0.25 of a level."""
    r = interpreter_report[case]
    assert r['ref_range'] > 100, r  # a real image came out, not zeros
    assert r['f32_max'] < F32_TOL, r
    assert r['u8_max'] <= 1 and r['u8_exact'] >= U8_EXACT, r
    assert r['u8_vs_own_f32'] == 0, r
    assert r['fp16_tmp_max'] < FP16_TMP_TOL, r


def test_samples_in_several_chunks_match_the_matmul_path(interpreter_report):
    """A tmp budget smaller than the batch's: the samples run in chunks sorted by box width, outputs in place."""
    r = interpreter_report['chunked']
    assert r['chunks'] >= 2, r
    assert r['f32_max'] < F32_TOL and r['u8_max'] <= 1 and r['u8_exact'] >= U8_EXACT, r


def test_chunks_keep_each_tmp_within_its_budget():
    from vision_kan.train import gpu_resample_triton as grt
    widths = [10, 20, 30, 33, 60, 500, 4000]
    runs = grt._chunks(widths, 224)
    assert [(a, b) for a, b, _ in runs][0][0] == 0 and runs[-1][1] == len(widths)
    assert all(b0 == a1 for (_, b0, _), (a1, _, _) in zip(runs, runs[1:]))  # contiguous, every sample once
    for a, b, widest in runs:
        assert widest == widths[b - 1]
        assert b - a == 1 or 3 * 224 * ((widest + 15) // 16 * 16) * (b - a) <= grt._TMP_ELEMENTS
    assert len(grt._chunks([500] * 256, 224)) == 1  # 256 train crops of 500x375 images: one chunk
    assert len(grt._chunks([100] * 250 + [4000] * 6, 224)) >= 2  # a few huge images: no 2.6 GB tmp


def test_zero_padding_equals_torchvision_random_crop(interpreter_report):
    """Scale 1 with window offsets of +-4 is F.pad + crop exactly, the padded rows and columns 0."""
    r = interpreter_report['zero_padding']
    assert r['pad_vs_torchvision'] == 0 and r['pad_u8_vs_torchvision'] == 0 and r['pad_rows_zero'] == 0, r
    assert r['u8_exact'] == 1.0 and r['f32_max'] == 0, r


def test_exact_weights_give_identical_uint8_ties_included(interpreter_report):
    """Dyadic weights: both paths exact, uint8 equal everywhere; x.5 ties occur and go to the even neighbour (down
    for some of them, so not floor(v + 0.5))."""
    r = interpreter_report['exact_ties']
    assert r['f32_max'] == 0 and r['u8_exact'] == 1.0, r
    assert r['ties'] >= 10 and r['ties_rounded_down'] >= 1, r


def test_bad_dtypes_raise(interpreter_report):
    assert interpreter_report['bad_dtypes']['value_errors'] == 2


# ------------------------------------------------------------------------------------------------------------------
# Compact weights (CPU, no Triton)
# ------------------------------------------------------------------------------------------------------------------

def _dense_weights_before_refactor(table: torch.Tensor, out_len: int, canvas_len: int, taps: int) -> torch.Tensor:
    """gpu_resample.bicubic_weights as it was before bicubic_taps (float32): the dense rows computed directly."""
    length, scale, offset, flip, reflect, resized = table.T[:, :, None, None]
    i = torch.arange(out_len, dtype=torch.float64)[None, :, None]
    q = torch.where(flip > 0, out_len - 1 - i, i) + offset
    mirrored = torch.where(q < 0, -q, torch.where(q >= resized, 2 * (resized - 1) - q, q))
    centre = (torch.where(reflect > 0, mirrored, q) + 0.5) * scale
    support = 2.0 * scale.clamp(min=1.0)
    lo = torch.trunc(centre - support + 0.5).clamp(min=0)
    hi = torch.minimum(torch.trunc(centre + support + 0.5), length)
    x = lo + torch.arange(taps, dtype=torch.float64)
    w = _cubic((x + 0.5 - centre) / scale.clamp(min=1.0)) * (x < hi)
    total = w.sum(-1, keepdim=True)
    w = w / torch.where(total == 0, torch.ones_like(total), total)
    dense = torch.zeros(len(table), out_len, canvas_len, dtype=torch.float32)
    return dense.scatter_add_(2, x.long().clamp(max=canvas_len - 1), w.float())


def _tables(seed: int, n: int = 40) -> torch.Tensor:
    """(n, 6) axis tables: boxes of 3-70 px resized to 5-90 px (down and up), window offsets -6..+30, flips, reflect."""
    g = torch.Generator().manual_seed(seed)
    length = torch.randint(3, 71, (n,), generator=g)
    resized = torch.randint(5, 91, (n,), generator=g)
    offset = torch.randint(-6, 31, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    reflect = torch.rand(n, generator=g) < 0.3
    return _axis_table(ResampleAxis(torch.zeros(n, dtype=torch.long), length, resized, offset, flip, reflect))


@pytest.mark.parametrize('out_len', [16, 24])
def test_compact_taps_scatter_to_the_dense_weights(out_len):
    """bicubic_taps scattered densely (by hand, here) equals the dense weights before the refactor bit for bit, and
    bicubic_weights (now built on bicubic_taps) too; taps of weight != 0 lie inside the box; rows sum to 1 or 0."""
    table = torch.cat([_tables(0), _axis_table(axis([0, 0], [20, 20], [20, 20], [-4, 4], [False, True]))])
    canvas = int(table[:, 0].max())
    taps = int(torch.ceil(4 * table[:, 1].clamp(min=1.0).max())) + 2
    old = _dense_weights_before_refactor(table, out_len, canvas, taps)
    assert torch.equal(bicubic_weights(table, out_len, canvas, taps), old)
    assert torch.equal(bicubic_weights(table, out_len, canvas, taps, torch.float16), old.half())
    lo, w = bicubic_taps(table, out_len, taps)
    assert lo.dtype == torch.int64 and lo.shape == (len(table), out_len)
    assert w.dtype == torch.float32 and w.shape == (len(table), out_len, taps)
    x = lo[:, :, None] + torch.arange(taps)                                              # (B, S, taps)
    assert (lo >= 0).all() and (x[w != 0] < table[:, 0, None, None].expand_as(x)[w != 0]).all()
    dense = torch.zeros(len(table), out_len, canvas)
    for b, i, t in (w != 0).nonzero().tolist():
        dense[b, i, x[b, i, t]] += w[b, i, t]
    assert torch.equal(dense, old)
    sums = w.double().sum(-1)
    assert ((sums - 1).abs() < 1e-6).logical_or(sums == 0).all()
    assert (sums == 0).any() and (sums != 0).any()  # the padded rows of the RandomCrop-like table
