"""Batched crop + resize for the GPU data backend: every sample its own source box and output window, one pair of
batched matmuls for the whole batch.

The resize is PIL's (and torchvision's `antialias=True`) separable bicubic: cubic kernel a = -0.5, widened by the
downscale factor (antialiasing), taps limited to the source box and renormalised there. Written as two dense weight
matrices per sample, (S, H) and (S, W), so that

    out[b] = Wy[b] @ img[b] @ Wx[b]^T        (3, H, W) -> (3, S, S)

is one batched matmul per axis. A flip is a reversed weight matrix (free); a crop without resize is a weight matrix
of 0/1 rows (exact), and a row with no tap inside the box is all zeros (zero padding: torchvision RandomCrop's
`padding`). Per axis, output pixel i (of S) reads the resized image at i + offset, whose centre lies at

    centre = (i + offset + 0.5) * scale,   scale = box_len / resized_len      (source-box coordinates)

and takes tap x (0 <= x < box_len) with weight cubic((x + 0.5 - centre) / max(scale, 1)), as PIL's
`precompute_coeffs` does.
"""
import math
from dataclasses import dataclass
from typing import List, Sequence, Union

import torch

__all__ = ['ResampleAxis', 'resample_boxes', 'bicubic_weights', 'ImageBatch', 'to_device']

ImageBatch = Union[torch.Tensor, Sequence[torch.Tensor]]  # uint8 (B, 3, H, W), or B uint8 (3, H_i, W_i)

_CHUNK_ELEMENTS = 1 << 27  # at most this many float32 canvas elements (512 MB) resampled at once


@dataclass
class ResampleAxis:
    """One axis of a per-sample crop + resize, every field a (B,) tensor on the CPU.

    start, length: the source box along this axis (pixels of the input image); taps never leave it.
    resized: the length the box is resized to (the output is a window of it). offset: the window's first pixel.
    flip: reverse the output along this axis.
    """
    start: torch.Tensor
    length: torch.Tensor
    resized: torch.Tensor
    offset: torch.Tensor
    flip: torch.Tensor


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on `device` without waiting for the device: a pinned, non-blocking copy on CUDA (a plain
    `.to('cuda')` of pageable memory synchronises the stream, which would stall the training loop)."""
    if device.type == 'cuda':
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (PIL's bicubic uses a = -0.5): 1 at 0, 0 at every other integer."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1                # |x| < 1
    far = (((x - 5) * x + 8) * x - 4) * a                      # 1 <= |x| < 2
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def bicubic_weights(axis: ResampleAxis, out_len: int, canvas_start: torch.Tensor, canvas_len: int,
                    device: torch.device) -> torch.Tensor:
    """(B, out_len, canvas_len) float32 weights: row i mixes the canvas pixels that output pixel i reads.

    canvas_start: (B,) CPU tensor, where the source box starts inside the canvas (the box's start in a whole image,
    0 when the box was copied out to the canvas' corner). The taps of row i are PIL's window
    [max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), box_len)), support = 2 max(scale, 1):
    at most `taps` of them, evaluated (B, S, taps) and scattered into the dense rows."""
    scale_cpu = axis.length.double() / axis.resized.double()
    taps = int(math.ceil(4 * float(scale_cpu.clamp(min=1.0).max()))) + 2                # window width bound
    per_sample = torch.stack([axis.length.double(), scale_cpu, axis.offset.double(), axis.flip.double(),
                              canvas_start.double()], 1)
    length, scale, offset, flip, start = to_device(per_sample, device).T[:, :, None, None]  # each (B, 1, 1)
    f64 = dict(dtype=torch.float64, device=device)
    support = 2.0 * scale.clamp(min=1.0)
    i = torch.arange(out_len, **f64)[None, :, None]                                     # (1, S, 1)
    i = torch.where(flip > 0, out_len - 1 - i, i)                                       # (B, S, 1)
    centre = (i + offset + 0.5) * scale
    lo = torch.trunc(centre - support + 0.5).clamp(min=0)
    hi = torch.minimum(torch.trunc(centre + support + 0.5), length)
    x = lo + torch.arange(taps, **f64)                                                  # (B, S, taps) box coords
    w = _cubic((x + 0.5 - centre) / scale.clamp(min=1.0)) * (x < hi)
    total = w.sum(-1, keepdim=True)
    w = w / torch.where(total == 0, torch.ones_like(total), total)                      # empty rows stay 0 (padding)
    col = (x + start).long().clamp(0, canvas_len - 1)
    dense = torch.zeros(len(axis.length), out_len, canvas_len, dtype=torch.float32, device=device)
    return dense.scatter_add_(2, col, w.float())


def _chunks(n: int, per_sample: int) -> List[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(1, per_sample))
    return [slice(k, min(n, k + step)) for k in range(0, n, step)]


def _resample_canvas(canvas: torch.Tensor, ay: ResampleAxis, ax: ResampleAxis, y0: torch.Tensor, x0: torch.Tensor,
                     out_size: int) -> torch.Tensor:
    """canvas: uint8 (n, 3, H, W) -> float32 (n, 3, S, S) in [0, 255] (not rounded)."""
    n, _, h, w = canvas.shape
    wy = bicubic_weights(ay, out_size, y0, h, canvas.device)                           # (n, S, H)
    wx = bicubic_weights(ax, out_size, x0, w, canvas.device)                           # (n, S, W)
    img = canvas.float()
    if h * out_size * (w + out_size) <= w * out_size * (h + out_size):                  # cheaper pass first
        tmp = torch.matmul(wy[:, None], img)                                           # (n, 3, S, W)
        return torch.matmul(tmp, wx.transpose(1, 2)[:, None])                          # (n, 3, S, S)
    tmp = torch.matmul(img, wx.transpose(1, 2)[:, None])                               # (n, 3, H, S)
    return torch.matmul(wy[:, None], tmp)


def _take(axis: ResampleAxis, idx: torch.Tensor) -> ResampleAxis:
    return ResampleAxis(*(getattr(axis, f)[idx] for f in ('start', 'length', 'resized', 'offset', 'flip')))


def resample_boxes(images: ImageBatch, ay: ResampleAxis, ax: ResampleAxis, out_size: int,
                   group_size: int = 32) -> torch.Tensor:
    """Crop every sample's source box, resize it (bicubic, antialiased), cut the output window and flip.

    Returns float32 (B, 3, S, S) in [0, 255], not rounded, on the images' device. A (B, 3, H, W) tensor is resampled
    in place (chunks of at most 512 MB of float32); a list has each source box copied to the corner of a zero canvas
    shared by up to `group_size` samples of similar box size (sorted by box area), so memory follows the boxes."""
    if isinstance(images, torch.Tensor):
        b, c, h, w = images.shape
        device = images.device
        out = torch.empty(b, c, out_size, out_size, device=device)
        for part in _chunks(b, c * h * w):
            idx = torch.arange(part.start, part.stop)
            out[part] = _resample_canvas(images[part], _take(ay, idx), _take(ax, idx), ay.start[part],
                                         ax.start[part], out_size)
        return out
    device = images[0].device
    out = torch.empty(len(images), 3, out_size, out_size, device=device)
    order = torch.argsort(ay.length * ax.length)
    for k in range(0, len(images), group_size):
        idx = order[k:k + group_size]
        hs, ws = ay.length[idx].tolist(), ax.length[idx].tolist()
        ys, xs = ay.start[idx].tolist(), ax.start[idx].tolist()
        canvas = torch.zeros(len(idx), 3, max(hs), max(ws), dtype=torch.uint8, device=device)
        for j, i in enumerate(idx.tolist()):
            canvas[j, :, :hs[j], :ws[j]] = images[i][:, ys[j]:ys[j] + hs[j], xs[j]:xs[j] + ws[j]]
        zeros = torch.zeros(len(idx), dtype=torch.long)
        out[to_device(idx, device)] = _resample_canvas(canvas, _take(ay, idx), _take(ax, idx), zeros, zeros, out_size)
    return out
