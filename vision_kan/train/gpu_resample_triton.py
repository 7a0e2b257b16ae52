"""`resample_boxes` (per-sample crop + antialiased bicubic resize + output window + flip) as two Triton kernels
with compact tap weights, reading the uint8 pixels straight from the images.

Same arithmetic as gpu_resample's matmul form, out[b] = Wy[b] @ box[b] @ Wx[b]^T, with each dense weight row
replaced by its taps: row i of an axis mixes box pixels lo[b, i] + t, t < taps, with weight w[b, i, t]
(`bicubic_taps`, the very numbers `bicubic_weights` scatters into its dense rows). Two separable passes, float32
accumulation:

    vertical:    tmp[b, c, i, x] = sum_t wy[b, i, t] * img[b, c, y0 + lo_y[b, i] + t, x0 + x]     x < box width
    horizontal:  out[b, c, i, j] = sum_t wx[b, j, t] * tmp[b, c, i, lo_x[b, j] + t]

(y0, x0) is the box's origin in image b; pixel (c, y, x) of image b lies at address_b + c H_b W_b + y W_b + x (each
image contiguous, read where it lies: a table of the images' addresses, no copy into one buffer; a (B, 3, H, W)
tensor gives address + b 3 H W). tmp is (n, 3, max box width rounded up to 16, S) for a chunk of n samples (the
batch sorted by box width, chunks within _TMP_ELEMENTS: one for ImageNet-sized images), each sample using the first
`box width` columns. A tap outside the box has weight 0 and is never
loaded, so rows with no tap inside the box (zero padding) come out 0, and no read leaves the box. The uint8 output is
clamped to [0, 255] and rounded half to even in the kernel (equal to round-then-clamp: both are monotone and the
bounds are integers).

Equal to `resample_boxes(..., dtype=torch.float32)` to float32 rounding (the same products, summed in another
order): < 1e-3 of a level in float32, uint8 equal but for values within ~1e-4 of a .5 tie (tested under the
interpreter, tests/test_gpu_resample_triton.py).

Why: the matmul form spends GPU time on work besides the arithmetic: a canvas per chunk gathered from a
concatenated copy of the images, casts, dense (B, S, canvas) weights that are mostly zeros (at a downscale of 2,
~10 of ~450 entries of a row), a permute copy, round/clamp passes and an index_copy back into place. Here the only
memory traffic is the images read once (re-reads of overlapping rows hit the cache), tmp written and read once,
the output written once, and the compact tables (B, S, taps).

Host side: a few CPU-side ints from the CPU ResampleAxis tensors, one pinned upload of the tables (`Upload`), the
taps computed on the device by `bicubic_taps` (batched torch ops), two launches; no sync, no per-image loop.
Imports Triton: load this module only where Triton runs (CUDA, or TRITON_INTERPRET=1 set before Triton is
imported).
"""
import contextlib
import math
from typing import List, Tuple

import torch
import triton
import triton.language as tl

from .gpu_resample import ImageBatch, ResampleAxis, Upload, _axis_table, bicubic_taps

__all__ = ['resample_boxes_fused']

# Launch parameters. vertical: output rows x box columns per program; each box column's BLOCK_I float32 results are
# one contiguous run of tmp (128 rows: 512 bytes). horizontal: output rows x output columns per program.
# benchmarks/resample_launch_sweep.py (H200, 2026-11-28, one call; 256 DeiT train crops of 500x375 to 224 px, GPU
# ms of both passes): vertical 128 x 32 0.786, 16 x 128 (the earlier shape) 1.016, 32 x 128 1.121, 64 x 32 2.078
# (unexplained), outputs equal; the horizontal shape 32 x 32 or 64 x 32 within 3 %.
_LAUNCH = {'vertical': {'BLOCK_I': 128, 'BLOCK_X': 32, 'num_warps': 4},
           'horizontal': {'BLOCK_I': 32, 'BLOCK_J': 32, 'num_warps': 4}}
# The per-sample table box_ptr (n, 6) int64 of one chunk, read by both kernels: the address of pixel (c=0, y0, x0) of
# the box, row stride (W), plane stride (H W), box height, box width, and the sample's index in the batch (its rows
# of the tap tables and of the output; the chunk's own index b addresses tmp).
_BOX_COLUMNS = 6
# tmp elements at most per chunk of samples (2^27: 512 MB in float32): samples sorted by box width, a new chunk when
# the next would pass it. One chunk for 256 train crops of 500x375 images at 224 px (boxes at most 500 wide:
# 3 x 224 x 512 x 256 = 88 M); a batch with a few 4000-pixel-wide images takes several instead of one tmp of
# 3 x 224 x 4000 x 256 = 688 M elements (2.6 GB).
_TMP_ELEMENTS = 1 << 27
# Tap counts and the tables' stride change from batch to batch: not specialised on (no recompilation per value).
_GENERIC = ['w_stride', 'taps']


@triton.jit
def _tmp_offsets(bc, rows, xs, S, tmp_width):
    """Element offsets of tmp[bc, rows, xs] ((BLOCK_I, 1) output rows, (1, BLOCK_X) box columns), tmp laid out as
    (B 3, tmp_width, S): a box column's S output rows together, so each tap of the horizontal pass loads whole runs
    of output rows (coalesced). Laid out as rows instead ((B 3, S, tmp_width), taps gathered along a row), that pass
    took 0.76 ms of a 256-crop DeiT batch against 0.16 (H200, 2026-11-28; the vertical pass 0.32 against 0.60: the
    transform's GPU time 3.42 against 3.08 ms)."""
    return (bc.to(tl.int64) * tmp_width + xs) * S + rows


@triton.jit(do_not_specialize=_GENERIC)
def _vertical_kernel(box_ptr, lo_ptr, w_ptr, tmp_ptr, S, tmp_width, w_stride, taps,
                     BLOCK_I: tl.constexpr, BLOCK_X: tl.constexpr):
    """Program (b c, row block, column block): tmp[b, c, rows, xs] for BLOCK_I output rows and BLOCK_X box columns.
    lo_ptr (B, S) int64, w_ptr (B, S, w_stride) float32: the y axis' taps; tmp as _tmp_offsets lays it out."""
    bc = tl.program_id(0)
    b = bc // 3
    x = tl.program_id(2) * BLOCK_X + tl.arange(0, BLOCK_X)                        # (BLOCK_X,) box columns
    box = box_ptr + b * 6
    box_w = tl.load(box + 4)
    if tl.program_id(2) * BLOCK_X >= box_w:                                      # past this sample's box
        return
    # the address of pixel (c, y0, x0) of image b: each image is read where it lies (no copy into one buffer)
    src = (tl.load(box) + (bc % 3) * tl.load(box + 2)).to(tl.pointer_type(tl.uint8))
    row_stride = tl.load(box + 1)
    box_h = tl.load(box + 3)
    rows = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)                    # (BLOCK_I,) output rows
    row_ok = rows < S
    x_ok = x < box_w
    tap_row = tl.load(box + 5) * S + rows                                        # row of the (B, S) tables
    lo = tl.load(lo_ptr + tap_row, mask=row_ok, other=0)                         # (BLOCK_I,) int64 first box row
    acc = tl.zeros((BLOCK_I, BLOCK_X), dtype=tl.float32)
    for t in range(taps):
        wt = tl.load(w_ptr + tap_row * w_stride + t, mask=row_ok, other=0.0)      # (BLOCK_I,)
        y = lo + t                                                               # box row read by tap t
        load_ok = (row_ok & (y < box_h) & (wt != 0.0))[:, None] & x_ok[None, :]  # taps of weight 0 never load
        px = tl.load(src + (y * row_stride)[:, None] + x[None, :], mask=load_ok, other=0)
        acc += wt[:, None] * px.to(tl.float32)                                   # (BLOCK_I, BLOCK_X)
    out = tmp_ptr + _tmp_offsets(bc, rows[:, None], x[None, :], S, tmp_width)
    tl.store(out, acc.to(tmp_ptr.dtype.element_ty), mask=row_ok[:, None] & x_ok[None, :])


@triton.jit(do_not_specialize=_GENERIC)
def _horizontal_kernel(tmp_ptr, box_ptr, lo_ptr, w_ptr, out_ptr, S, tmp_width, w_stride, taps,
                       ROUND: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    """Program (b c, row block, column block): out[b, c, rows, cols] for BLOCK_I x BLOCK_J output pixels.
    lo_ptr (B, S) int64, w_ptr (B, S, w_stride) float32: the x axis' taps. ROUND: clamp to [0, 255] and round half to
    even (uint8 output)."""
    bc = tl.program_id(0)
    b = bc // 3
    box_w = tl.load(box_ptr + b * 6 + 4)
    sample = tl.load(box_ptr + b * 6 + 5)                                        # int64, index in the batch
    rows = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)                    # (BLOCK_I,)
    cols = tl.program_id(2) * BLOCK_J + tl.arange(0, BLOCK_J)                    # (BLOCK_J,)
    row_ok, col_ok = rows < S, cols < S
    tap_col = sample * S + cols
    lo = tl.load(lo_ptr + tap_col, mask=col_ok, other=0)                         # (BLOCK_J,) int64 first box column
    acc = tl.zeros((BLOCK_I, BLOCK_J), dtype=tl.float32)
    for t in range(taps):
        wt = tl.load(w_ptr + tap_col * w_stride + t, mask=col_ok, other=0.0)      # (BLOCK_J,)
        x = lo + t
        load_ok = row_ok[:, None] & (col_ok & (x < box_w) & (wt != 0.0))[None, :]
        v = tl.load(tmp_ptr + _tmp_offsets(bc, rows[:, None], x[None, :], S, tmp_width), mask=load_ok, other=0.0)
        acc += wt[None, :] * v.to(tl.float32)                                    # (BLOCK_I, BLOCK_J)
    if ROUND:
        # round half to even with floor only (exact: v - floor(v) is exact and the values are small integers)
        acc = tl.minimum(tl.maximum(acc, 0.0), 255.0)
        r = tl.floor(acc)
        frac = acc - r
        odd = (r - 2.0 * tl.floor(r * 0.5)) == 1.0
        acc = r + ((frac > 0.5) | ((frac == 0.5) & odd)).to(tl.float32)
    out = out_ptr + (((sample * 3 + bc % 3) * S + rows) * S)[:, None] + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def _chunks(widths: List[int], out_size: int) -> List[Tuple[int, int, int]]:
    """(start, stop, widest) runs of the box widths (sorted ascending) whose tmp, 3 S widest per sample (rounded up
    to 16), stays within _TMP_ELEMENTS; a sample alone in its run whatever its width."""
    runs, start = [], 0
    for k, width in enumerate(widths):
        padded = (width + 15) // 16 * 16
        if k > start and 3 * out_size * padded * (k + 1 - start) > _TMP_ELEMENTS:
            runs.append((start, k, widths[k - 1]))
            start = k
    runs.append((start, len(widths), widths[-1]))
    return runs


def _taps_bound(table: torch.Tensor) -> int:
    """Window width bound of an axis from its CPU (B, 6) table: ceil(2 support) + 2, support = 2 max(scale, 1)."""
    return int(math.ceil(4 * float(table[:, 1].clamp(min=1.0).max()))) + 2


def resample_boxes_fused(images: ImageBatch, ay: ResampleAxis, ax: ResampleAxis, out_size: int,
                         out_dtype: torch.dtype = torch.float32,
                         tmp_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`resample_boxes` in two Triton passes: images uint8 (B, 3, H, W) or a list of uint8 (3, H_i, W_i) on one
    device; returns (B, 3, S, S), float32 (not rounded; the default, as in `resample_boxes`) or uint8 (rounded half
    to even, clamped).

    tmp_dtype: the vertical pass' result, float32 or float16 (half its memory traffic; moves an output by up to
    ~0.2 of a level). The ResampleAxis tensors are on the CPU (as `resample_boxes` takes them)."""
    if out_dtype not in (torch.uint8, torch.float32):
        raise ValueError(f'out_dtype must be torch.uint8 or torch.float32, got {out_dtype}')
    if tmp_dtype not in (torch.float32, torch.float16):
        raise ValueError(f'tmp_dtype must be torch.float32 or torch.float16, got {tmp_dtype}')
    if isinstance(images, torch.Tensor):
        device, (n, _, h, w) = images.device, images.shape
        images = images.contiguous()
        height, width = torch.full((n,), h, dtype=torch.long), torch.full((n,), w, dtype=torch.long)
        image_start = images.data_ptr() + torch.arange(n, dtype=torch.long) * (3 * h * w)   # addresses
    else:
        device = images[0].device
        images = [im.contiguous() for im in images]    # kept referenced until the kernels are queued
        image_start = torch.tensor([im.data_ptr() for im in images], dtype=torch.long)      # addresses
        height = torch.tensor([im.shape[1] for im in images], dtype=torch.long)
        width = torch.tensor([im.shape[2] for im in images], dtype=torch.long)
        n = len(height)
    s = out_size
    order = torch.argsort(ax.length, stable=True)                                          # by box width
    boxes = torch.stack([image_start + ay.start * width + ax.start, width, height * width, ay.length, ax.length,
                         torch.arange(n)], 1)[order]                                       # (B, 6) int64
    tables = torch.cat([_axis_table(ay), _axis_table(ax)])                                 # (2B, 6) float64
    taps_y, taps_x = _taps_bound(tables[:n]), _taps_bound(tables[n:])
    packed = Upload()
    slots = [packed.add(boxes), packed.add(tables)]
    boxes_d, tables_d = (packed.send(device)[k] for k in slots)
    boxes_d = boxes_d.view(n, _BOX_COLUMNS)
    lo, w = bicubic_taps(tables_d.view(2 * n, 6), s, max(taps_y, taps_x))                 # (2B, S), (2B, S, taps)
    out = torch.empty(n, 3, s, s, dtype=out_dtype, device=device)
    v, hz = _LAUNCH['vertical'], _LAUNCH['horizontal']
    guard = torch.cuda.device(device) if device.type == 'cuda' else contextlib.nullcontext()
    with guard:
        for start, stop, widest in _chunks(ax.length[order].tolist(), s):
            m = stop - start
            # tmp: the chunk's widest box rounded up to 16 columns (the extra ones unused)
            tmp_width = (widest + 15) // 16 * 16
            tmp = torch.empty(m * 3 * tmp_width * s, dtype=tmp_dtype, device=device)    # (m, 3, max box w, S)
            chunk = boxes_d[start:stop]
            _vertical_kernel[(3 * m, triton.cdiv(s, v['BLOCK_I']), triton.cdiv(tmp_width, v['BLOCK_X']))](
                chunk, lo[:n], w[:n], tmp, s, tmp_width, w.shape[2], taps_y, **v)
            _horizontal_kernel[(3 * m, triton.cdiv(s, hz['BLOCK_I']), triton.cdiv(s, hz['BLOCK_J']))](
                tmp, chunk, lo[n:], w[n:], out, s, tmp_width, w.shape[2], taps_x, ROUND=out_dtype == torch.uint8,
                **hz)
    return out
