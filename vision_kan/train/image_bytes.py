"""Image files as bytes for the GPU data backend: read in DataLoader workers, routed to nvjpeg or to a CPU decoder.

nvjpeg (torchvision.io.decode_jpeg(..., device='cuda')) takes the common case: baseline 8-bit JPEGs with three
YCbCr components that end with an EOI marker and whose scan data holds no misplaced marker (nvjpeg does not check
the entropy-coded data: a damaged scan would decode to noise without an error, where PIL raises; the check is one
vectorised pass over the bytes, 36 µs for a 76 KB 500x375 file on this 2-core CPU). Everything else is decoded on
the CPU, in the worker, by
torchvision.io.decode_image (ImageReadMode.RGB), and by PIL when torchvision cannot read the format (BMP, TIFF):

    grayscale and CMYK/YCCK JPEGs, RGB-coded JPEGs (Adobe transform 0), progressive and 12-bit JPEGs (nvjpeg would
    decode them one by one with host Huffman decoding), files without an EOI at the end (truncated, or trailing
    bytes), JPEGs with a damaged scan (refused there with PIL's error, or decoded with a warning where libjpeg, and
    PIL with it, accepts the damage), PNG and every other format.

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


# What may follow a 0xFF byte inside the entropy-coded data of a baseline JPEG (from its first start-of-scan to the
# EOI): 0x00 (a stuffed 0xFF data byte), 0xFF (fill), RST0-7, and the segments allowed between scans (DHT, DQT, DRI,
# DNL, SOS, APPn, COM). Anything else (another SOF, SOI, a stray EOI, a reserved code) means the data is not a JPEG
# scan, which nvjpeg does not check: it decodes such a file to noise without an error (H100, 2026-11-28), where PIL
# raises.
_IN_SCAN = np.zeros(256, dtype=bool)
_IN_SCAN[[0x00, 0xFF, 0xC4, 0xDB, 0xDD, 0xDC, 0xDA, 0xFE, *range(0xD0, 0xD8), *range(0xE0, 0xF0)]] = True


def _scan_bytes_plausible(data: bytearray, start: int, end: int) -> bool:
    """Every 0xFF in data[start:end] (the scans, EOI excluded) followed by a byte a scan may hold there."""
    scan = np.frombuffer(data, dtype=np.uint8, count=end)[start:]       # (m,)
    ff = np.flatnonzero(scan[:-1] == 0xFF)  # (k,) 0xFF bytes whose next byte is still in the scans (a last 0xFF
    return bool(_IN_SCAN[scan[ff + 1]].all())  # is a fill byte before the EOI)


def nvjpeg_decodable(data: bytearray) -> bool:
    """True for a baseline 8-bit JPEG with 3 YCbCr components and an EOI marker at the end, whose scan data holds no
    marker a scan cannot hold; False routes the file to the CPU decoders (which decode it or raise the pil backend's
    error). Reads the marker segments up to the start of scan, then one vectorised pass over the scan bytes for
    misplaced markers (~tens of µs for a 100 KB file, in the DataLoader worker)."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    body = data.rstrip(b'\x00\r\n\t ')
    if body[-2:] != b'\xff\xd9':  # truncated, or trailing bytes after the image
        return False
    i, rgb_coded, frame_ok = 2, False, None
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
            frame_ok = precision == 8 and components == 3 and not rgb_coded
            if not frame_ok:
                return False
        elif marker in _SOF_OTHER:  # other coding
            return False
        elif marker == 0xDA:  # start of scan: the entropy-coded data follows its header
            return bool(frame_ok) and _scan_bytes_plausible(data, i + 2 + length, len(body) - 2)
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
