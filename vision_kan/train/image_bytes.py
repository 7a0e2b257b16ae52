"""Image files as bytes for the GPU data backend: read in DataLoader workers, routed to nvjpeg or to a CPU decoder.

nvjpeg (torchvision.io.decode_jpeg(..., device='cuda')) takes the common case: baseline 8-bit JPEGs with three
YCbCr components that end with an EOI marker. Everything else is decoded on the CPU, in the worker, by
torchvision.io.decode_image (ImageReadMode.RGB), and by PIL when torchvision cannot read the format (BMP, TIFF):

    grayscale and CMYK/YCCK JPEGs, RGB-coded JPEGs (Adobe transform 0), progressive and 12-bit JPEGs (nvjpeg would
    decode them one by one with host Huffman decoding), files without an EOI at the end (truncated, or trailing
    bytes), PNG and every other format.

A file that no decoder reads raises the CPU path's CorruptImageError (PIL's message, the same line as the pil
backend). A JPEG that nvjpeg rejects inside a batch sends that batch through the CPU decoders one image at a time.
"""
import os
from typing import List, Sequence

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from .errors import CorruptImageError

__all__ = ['read_file_bytes', 'bytes_tensor', 'nvjpeg_decodable', 'decode_on_cpu', 'decode_jpegs']

_SOF_BASELINE = (0xC0, 0xC1)  # baseline and extended sequential Huffman: nvjpeg's hardware/batched path
_SOF_OTHER = (0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)  # progressive, lossless, arithmetic


def read_file_bytes(path: str) -> bytearray:
    """The file's bytes (one read into a writable buffer, so torch.frombuffer shares it without a copy)."""
    try:
        with open(path, 'rb') as f:
            data = bytearray(os.fstat(f.fileno()).st_size)
            f.readinto(data)
    except OSError as e:
        raise CorruptImageError(f'corrupt image file {path}: {e}') from None
    return data


def bytes_tensor(data: bytearray) -> torch.Tensor:
    """uint8 (n,) view of the buffer (an empty file gives an empty tensor)."""
    return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def nvjpeg_decodable(data: bytearray) -> bool:
    """True for a baseline 8-bit JPEG with 3 YCbCr components and an EOI marker at the end; False routes the file
    to the CPU decoders. Reads the marker segments up to the frame header (SOF): microseconds per file."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    if data.rstrip(b'\x00\r\n\t ')[-2:] != b'\xff\xd9':  # truncated, or trailing bytes after the image
        return False
    i, rgb_coded = 2, False
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if marker == 0xEE and data[i + 4:i + 9] == b'Adobe' and i + 15 < n:  # APP14: colour transform byte
            rgb_coded = data[i + 15] == 0  # 0: RGB or CMYK stored as is (no YCbCr)
        elif marker in _SOF_BASELINE:
            if i + 9 >= n:
                return False
            precision, components = data[i + 4], data[i + 9]
            return precision == 8 and components == 3 and not rgb_coded
        elif marker in _SOF_OTHER or marker == 0xDA:  # other coding, or scan data before any frame header
            return False
        i += 2 + length
    return False


def decode_on_cpu(data: torch.Tensor, path: str) -> torch.Tensor:
    """uint8 (3, H, W) RGB from a file's bytes: torchvision's decoders (JPEG incl. CMYK and grayscale, PNG, GIF,
    WebP), then PIL for the formats torchvision does not read. Raises the pil backend's CorruptImageError (same
    message) when neither reads it."""
    try:
        return decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        pass
    from .data import load_rgb_image  # PIL: reads BMP/TIFF, or raises the exact error line of the pil backend
    img = load_rgb_image(path)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


def decode_jpegs(encoded: Sequence[torch.Tensor], paths: Sequence[str], device: torch.device) -> List[torch.Tensor]:
    """Decode JPEG bytes (uint8 (n_i,) CPU tensors) to uint8 (3, H_i, W_i) RGB on device in one batched call
    (nvjpeg on CUDA). When the batch call fails (nvjpeg rejects one file), each image goes through decode_on_cpu and
    is copied to device: a file no decoder reads raises CorruptImageError naming paths[i]."""
    if not encoded:
        return []
    try:
        return list(decode_jpeg(list(encoded), mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        return [decode_on_cpu(data, path).to(device, non_blocking=True) for data, path in zip(encoded, paths)]
