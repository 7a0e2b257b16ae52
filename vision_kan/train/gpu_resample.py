"""Batched crop + resize for the GPU data backend: every sample its own source box and output window, a handful of
batched ops for the whole batch (no per-image op, so the cost does not grow with Python overhead per image).

Two forms of the same weights (`bicubic_taps`): on CUDA two Triton passes with the compact taps
(gpu_resample_triton.py: half the host time and less GPU time, equal uint8 output on an H200), elsewhere (the CPU,
the tests, or RESAMPLE_METHOD = 'matmul') the batched matmuls described here.

The resize is PIL's (and torchvision's `antialias=True`) separable bicubic: cubic kernel a = -0.5, widened by the
downscale factor (antialiasing), taps limited to the source box and renormalised there. Written as two dense weight
matrices per sample, (S, h) and (S, w) for a box of h x w, so that

    out[b] = Wy[b] @ box[b] @ Wx[b]^T        (3, h, w) -> (3, S, S)

is one batched matmul per axis. A flip is a reversed weight matrix (free); a crop without resize is a weight matrix
of 0/1 rows (exact), and a row with no tap inside the box is all zeros (zero padding: torchvision RandomCrop's
`padding`). Per axis, output pixel i (of S) reads the resized box at i + offset, whose centre lies at

    centre = (i + offset + 0.5) * scale,   scale = box_len / resized_len      (box coordinates)

and takes taps x in PIL's window around it with weight cubic((x + 0.5 - centre) / max(scale, 1)), as PIL's
`precompute_coeffs` does.

A batch whose boxes all keep their size (scale 1 on both axes, no reflection: CIFAR's zero-padded RandomCrop) takes
a plain gather instead (`_shift_crop`): each output pixel is one input pixel or 0, which is exactly what the cubic
weights give at scale 1 (1 at the tap, 0 at every other integer), in a handful of ops.

Why matmuls: this equals torch's F.interpolate(mode='bicubic', antialias=True) of each crop (torchvision's tensor
resize) to < 1e-3 of a level in float32, with one batched op for crops of every size (F.interpolate needs a call per
crop size). grid_sample (bicubic a = -0.75, no kernel widening) aliases when downscaling, and roi_align is bilinear.
Against PIL (the CPU path, which rounds to uint8 between its two passes) the eval transform is within 3 levels, mean
< 0.2 levels (tested).

The boxes are gathered from one flat uint8 buffer (the images concatenated, then zeros as long as the widest image)
into a canvas per chunk of samples of similar box size: canvas[b, y, c, :] = flat[row_start[b, y, c] + arange(w_max)],
one index_select of rows from flat.unfold(0, w_max, 1) (a view whose row r is flat[r:r + w_max]). Canvas pixels
beyond a box are whatever follows in memory; their weights are 0. Rows ordered (y, c) make each pass one plain
batched matmul over all three channels:

    Wy (n, S, h) @ canvas (n, h, 3 w)   or   canvas (n, h 3, w) @ Wx^T (n, w, S)

so no operand is broadcast (copied) per channel. GPU time of the train crop at 224 px, batch 256, on an H200
(2026-11-28, benchmarks/gpu_augment_speed.py --profile): 4.4 ms a batch with an int64 gather index, broadcast weights
and a float32 result; this layout and the uint8 result remove those passes.
"""
import math
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch

__all__ = ['ResampleAxis', 'resample_boxes', 'bicubic_weights', 'bicubic_taps', 'ImageBatch', 'to_device', 'Upload']

ImageBatch = Union[torch.Tensor, Sequence[torch.Tensor]]  # uint8 (B, 3, H, W), or B uint8 (3, H_i, W_i)

_CHUNK_ELEMENTS = 1 << 26  # canvas elements gathered at once (its int64 index: 512 MB)


@dataclass
class ResampleAxis:
    """One axis of a per-sample crop + resize, every field a (B,) tensor on the CPU.

    start, length: the source box along this axis (pixels of the input image); taps never leave it.
    resized: the length the box is resized to (the output is a window of it). offset: the window's first pixel.
    flip: reverse the output along this axis. reflect: a window pixel outside the resized box mirrors into it
    (torchvision's padding_mode='reflect'); without it (or None) it is 0 (zero padding).
    """
    start: torch.Tensor
    length: torch.Tensor
    resized: torch.Tensor
    offset: torch.Tensor
    flip: torch.Tensor
    reflect: Optional[torch.Tensor] = None


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on `device` without waiting for the device: a pinned, non-blocking copy on CUDA (a plain
    `.to('cuda')` of pageable memory synchronises the stream, which would stall the training loop)."""
    if device.type == 'cuda':
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class Upload:
    """Small CPU tensors sent to the device in two pinned copies: `add` returns a slot, `send` the device tensors in
    slot order, int64 for integer tensors (indices, ready for index_select), float64 for the rest."""

    def __init__(self):
        self._parts: List[torch.Tensor] = []

    def add(self, t: torch.Tensor) -> int:
        is_int = not (t.is_floating_point() or t.is_complex())
        self._parts.append(t.reshape(-1).to(torch.long if is_int else torch.float64))
        return len(self._parts) - 1

    def send(self, device: torch.device) -> List[torch.Tensor]:
        sent: List[torch.Tensor] = [torch.empty(0)] * len(self._parts)
        for dtype in (torch.long, torch.float64):
            slots = [k for k, p in enumerate(self._parts) if p.dtype == dtype]
            if slots:
                flat = to_device(torch.cat([self._parts[k] for k in slots]), device)
                for k, part in zip(slots, flat.split([self._parts[k].numel() for k in slots])):
                    sent[k] = part
        return sent


def _cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (PIL's bicubic uses a = -0.5): 1 at 0, 0 at every other integer."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1                # |x| < 1
    far = (((x - 5) * x + 8) * x - 4) * a                      # 1 <= |x| < 2
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


_TABLE_COLUMNS = 6


def _axis_table(axis: ResampleAxis) -> torch.Tensor:
    """(B, 6) float64 on the CPU: box length, scale (box / resized), window offset, flip, reflect, resized."""
    reflect = torch.zeros_like(axis.flip) if axis.reflect is None else axis.reflect
    return torch.stack([axis.length.double(), axis.length.double() / axis.resized.double(), axis.offset.double(),
                        axis.flip.double(), reflect.double(), axis.resized.double()], 1)


def bicubic_taps(table: torch.Tensor, out_len: int, taps: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The compact form of the weights of a (B, 6) `_axis_table` on the device (computed in float64): row i of a
    sample mixes box pixels lo[b, i] + t, t < taps, with weight w[b, i, t]. Returns lo (B, out_len) int64 and w
    (B, out_len, taps) float32, normalised (each row sums to 1, or is all zeros: zero padding).

    Taps of row i: PIL's window [max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), box_len)),
    support = 2 max(scale, 1), at most `taps` wide (weights past the window are 0, so lo + t may lie past the box);
    the centre of output pixel i is that of the resized pixel it reads: flipped, shifted by the window offset and
    mirrored into the resized box with `reflect` (see the module docstring)."""
    length, scale, offset, flip, reflect, resized = table.T[:, :, None, None]           # each (B, 1, 1)
    i = torch.arange(out_len, dtype=torch.float64, device=table.device)[None, :, None]  # (1, S, 1)
    q = torch.where(flip > 0, out_len - 1 - i, i) + offset                              # (B, S, 1) resized pixel
    mirrored = torch.where(q < 0, -q, torch.where(q >= resized, 2 * (resized - 1) - q, q))
    centre = (torch.where(reflect > 0, mirrored, q) + 0.5) * scale
    support = 2.0 * scale.clamp(min=1.0)
    lo = torch.trunc(centre - support + 0.5).clamp(min=0)                               # (B, S, 1)
    hi = torch.minimum(torch.trunc(centre + support + 0.5), length)
    x = lo + torch.arange(taps, dtype=torch.float64, device=table.device)              # (B, S, taps) box pixels
    w = _cubic((x + 0.5 - centre) / scale.clamp(min=1.0)) * (x < hi)
    total = w.sum(-1, keepdim=True)
    w = w / torch.where(total == 0, torch.ones_like(total), total)                      # empty rows stay 0 (padding)
    return lo[..., 0].long(), w.float()


def bicubic_weights(table: torch.Tensor, out_len: int, canvas_len: int, taps: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, out_len, canvas_len) weights in `dtype` from a (B, 6) `_axis_table` on the device (the box starts at canvas
    pixel 0): row i mixes the box pixels that output pixel i reads, the `bicubic_taps` (B, S, taps) scattered into
    dense rows."""
    lo, w = bicubic_taps(table, out_len, taps)                                          # (B, S), (B, S, taps)
    x = lo[:, :, None] + torch.arange(taps, device=table.device)                        # (B, S, taps) box pixels
    dense = torch.zeros(len(table), out_len, canvas_len, dtype=torch.float32, device=table.device)
    # scattered in float32 (half-precision atomics are slow), then one conversion
    return dense.scatter_add_(2, x.clamp(max=canvas_len - 1), w).to(dtype)


def _ceil8(v: int) -> int:
    return (v + 7) // 8 * 8


def _flatten(images: ImageBatch) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pixels in one uint8 vector followed by max-width zeros (one cat), with each image's start, height and
    width (CPU int64): a row of up to max-width pixels read from any pixel stays inside the vector."""
    if isinstance(images, torch.Tensor):
        b, c, h, w = images.shape
        sizes = torch.tensor([[h, w]] * b, dtype=torch.long)
        parts = [images.reshape(-1)]
    else:
        sizes = torch.tensor([tuple(im.shape[1:]) for im in images], dtype=torch.long)
        parts = [im.reshape(-1) for im in images]
    tail = parts[0].new_zeros(_ceil8(int(sizes[:, 1].max())))
    numel = 3 * sizes[:, 0] * sizes[:, 1]
    return torch.cat(parts + [tail]), torch.cumsum(numel, 0) - numel, sizes[:, 0], sizes[:, 1]


def _chunks(order: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> List[torch.Tensor]:
    """Split `order` (samples sorted by box area) into runs whose canvas, 3 * max h * max w per sample, stays within
    _CHUNK_ELEMENTS."""
    chunks, start, max_h, max_w = [], 0, 0, 0
    hs, ws = h[order].tolist(), w[order].tolist()
    for k in range(len(hs)):
        nh, nw = max(max_h, hs[k]), max(max_w, ws[k])
        if k > start and 3 * nh * nw * (k + 1 - start) > _CHUNK_ELEMENTS:
            chunks.append(order[start:k])
            start, nh, nw = k, hs[k], ws[k]
        max_h, max_w = nh, nw
    chunks.append(order[start:])
    return chunks


# 'auto': the Triton form (gpu_resample_triton) on CUDA where Triton imports and no matmul dtype is asked for, the
# matmul form elsewhere; 'matmul' always the matmul form (benchmarks set it to compare the two)
RESAMPLE_METHOD = 'auto'


_TRITON_FAILED = False


def _triton_failed(exc: Exception) -> None:
    """The Triton form failed to compile or launch: say so once, then use the matmul form for the rest of the run."""
    global _TRITON_FAILED
    _TRITON_FAILED = True
    warnings.warn(f'gpu_resample: the Triton crop + resize failed ({type(exc).__name__}: {str(exc)[:200]}); '
                  'using the matmul form from now on')


def _wants_triton(device: torch.device, dtype: Optional[torch.dtype]) -> bool:
    return device.type == 'cuda' and dtype is None and RESAMPLE_METHOD == 'auto' and not _TRITON_FAILED


def _triton_resample():
    """gpu_resample_triton.resample_boxes_fused, or None where Triton does not import."""
    try:
        from .gpu_resample_triton import resample_boxes_fused
    except ImportError:
        return None
    return resample_boxes_fused


def _unit_scale(axis: ResampleAxis) -> bool:
    """Every box of this axis keeps its length (no resize) and pads with zeros (no reflection)."""
    return bool((axis.length == axis.resized).all()) and (axis.reflect is None or not bool(axis.reflect.any()))


def _source_index(axis: ResampleAxis, out_size: int) -> torch.Tensor:
    """(B, S) int64 on the CPU: the image pixel that output pixel i reads along this scale-1 axis, -1 for padding."""
    i = torch.arange(out_size)[None, :]
    q = torch.where(axis.flip[:, None], out_size - 1 - i, i) + axis.offset[:, None]    # pixel of the box
    return torch.where((q >= 0) & (q < axis.length[:, None]), axis.start[:, None] + q, torch.full_like(q, -1))


def _shift_crop(images: torch.Tensor, ay: ResampleAxis, ax: ResampleAxis, out_size: int,
                out_dtype: torch.dtype) -> torch.Tensor:
    """resample_boxes for scale-1 boxes of a (B, 3, H, W) batch: one gather and one mask (zero padding)."""
    b, c, h, w = images.shape
    s = out_size
    packed = Upload()
    slots = [packed.add(_source_index(ay, s)), packed.add(_source_index(ax, s))]
    rows, cols = (t.view(b, s) for t in (packed.send(images.device)[k] for k in slots))
    flat = rows.clamp(min=0)[:, :, None] * w + cols.clamp(min=0)[:, None, :]              # (B, S, S)
    out = images.reshape(b, c, h * w).gather(2, flat.view(b, 1, s * s).expand(b, c, s * s)).view(b, c, s, s)
    inside = ((rows >= 0)[:, :, None] & (cols >= 0)[:, None, :])[:, None]                 # (B, 1, S, S)
    return torch.where(inside, out, torch.zeros((), dtype=out.dtype, device=out.device)).to(out_dtype)


def resample_boxes(images: ImageBatch, ay: ResampleAxis, ax: ResampleAxis, out_size: int,
                   dtype: Optional[torch.dtype] = None, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Crop every sample's source box, resize it (bicubic, antialiased), cut the output window and flip.

    images: uint8 (B, 3, H, W) or a list of uint8 (3, H_i, W_i), on one device. Returns (B, 3, S, S) in [0, 255]:
    float32 not rounded, or with out_dtype=torch.uint8 rounded to nearest (half to even) and clamped, as the train
    and eval transforms want it.
    A (B, 3, H, W) batch of scale-1 boxes is a gather (`_shift_crop`, any device and dtype: exact).
    On CUDA (RESAMPLE_METHOD 'auto', no `dtype` given) the two Triton passes of gpu_resample_triton do it, in float32
    with compact taps. Else the matmuls below run in `dtype` (rounding in the matmul dtype, which holds these values
    exactly): float16 on CUDA by default (uint8 values are exact in it; the weights' rounding moves an output by
    < 0.3 of a level), float32 elsewhere."""
    device = images.device if isinstance(images, torch.Tensor) else images[0].device
    if isinstance(images, torch.Tensor) and _unit_scale(ay) and _unit_scale(ax):
        return _shift_crop(images, ay, ax, out_size, out_dtype)
    if _wants_triton(device, dtype):
        fused = _triton_resample()
        if fused is not None:
            try:
                return fused(images, ay, ax, out_size, out_dtype=out_dtype)
            except Exception as exc:  # noqa: BLE001  Triton cannot compile or launch here (CompilationError too)
                _triton_failed(exc)
    dtype = dtype or (torch.float16 if device.type == 'cuda' else torch.float32)
    flat, image_start, height, width = _flatten(images)
    out = torch.empty(len(height), 3, out_size, out_size, device=device, dtype=out_dtype)
    order = torch.argsort(ay.length * ax.length, stable=True)
    for idx in _chunks(order, ay.length, ax.length):
        n = len(idx)
        # canvas sides rounded up to multiples of 8, so that the half-precision matmuls run on aligned operands
        # (the kernels for unaligned ones are ~2x slower); the extra rows and columns carry weight 0
        hc, wc = _ceil8(int(ay.length[idx].max())), _ceil8(int(ax.length[idx].max()))
        # canvas row (b, y, c) starts at image_start + c H W + (y0 + y) W + x0; rows past the box repeat its last
        # row (weight 0) so that no read leaves the image
        y = torch.minimum(torch.arange(hc)[None, :], ay.length[idx, None] - 1)          # (n, hc)
        c = torch.arange(3)[None, None, :]
        rows = (image_start[idx, None, None] + c * (height * width)[idx, None, None]
                + ((ay.start[idx, None] + y) * width[idx, None] + ax.start[idx, None])[:, :, None])  # (n, hc, 3)
        tables = torch.cat([_axis_table(ay)[idx], _axis_table(ax)[idx]])                 # (2n, 6)
        packed = Upload()
        slots = [packed.add(rows), packed.add(idx), packed.add(tables)]
        rows_d, idx_d, tables_d = (packed.send(device)[k] for k in slots)
        canvas = flat.unfold(0, wc, 1).index_select(0, rows_d).to(dtype)               # (n hc 3, wc)
        taps = int(math.ceil(4 * float(tables[:, 1].clamp(min=1.0).max()))) + 2           # window width bound
        weights = bicubic_weights(tables_d.view(2 * n, _TABLE_COLUMNS), out_size, max(hc, wc), taps, dtype)
        wy, wx = weights[:n, :, :hc], weights[n:, :, :wc]                                # (n, S, hc), (n, S, wc)
        if hc * (wc + out_size) <= wc * (hc + out_size):                                  # cheaper pass first
            res = torch.bmm(torch.bmm(wy, canvas.view(n, hc, 3 * wc)).view(n, out_size * 3, wc), wx.transpose(1, 2))
        else:
            res = torch.bmm(wy, torch.bmm(canvas.view(n, hc * 3, wc), wx.transpose(1, 2)).view(n, hc, 3 * out_size))
        res = res.view(n, out_size, 3, out_size).permute(0, 2, 1, 3)                     # (n, 3, S, S)
        if out_dtype == torch.uint8:
            res = res.round().clamp_(0, 255)
        out.index_copy_(0, idx_d, res.to(out_dtype))
    return out
