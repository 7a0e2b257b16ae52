"""DeiT III's ThreeAugment step (data.build_three_augment's RandomChoice) on a batch of uint8 tensors: every sample
one of grayscale, solarize at 128, or a Gaussian blur with sigma ~ U(0.1, 2), each as torchvision does it on a PIL
image (Grayscale(3) = PIL's convert('L'); RandomSolarize(128) = ImageOps.solarize; GaussianBlur = torchvision's
reflect-padded convolution with a normalised Gaussian, rounded back to uint8).
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .gpu_randaugment import gray_pil
from .gpu_resample import to_device

__all__ = ['ThreeAugmentParams', 'sample_three_augment', 'apply_three_augment', 'blur_kernel_size', 'gaussian_blur']

CHOICES = ('grayscale', 'solarize', 'blur')
SIGMA_RANGE = (0.1, 2.0)


@dataclass
class ThreeAugmentParams:
    """(B,) CPU tensors: choice indexes CHOICES; sigma is the blur's (drawn for every sample, used by 'blur')."""
    choice: torch.Tensor
    sigma: torch.Tensor


def blur_kernel_size(input_size: int) -> int:
    """build_three_augment's kernel: odd, ~10 % of the image (23 px at 224), at least 3."""
    return max(3, 2 * int(0.05 * input_size) + 1)


def sample_three_augment(n: int, generator: Optional[torch.Generator]) -> ThreeAugmentParams:
    choice = torch.randint(0, len(CHOICES), (n,), generator=generator)
    lo, hi = SIGMA_RANGE
    sigma = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    return ThreeAugmentParams(choice=choice, sigma=sigma)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """torchvision's gaussian_blur per sample: uint8 (n, 3, H, W), sigma (n,) on the CPU -> uint8. The 2-d kernel is
    the outer product of the 1-d one, so it runs as two grouped 1-d convolutions over all n * 3 planes at once."""
    n, c, h, w = x.shape
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, steps=kernel_size)                                 # (k,)
    pdf = torch.exp(-0.5 * (t[None] / sigma.float()[:, None]).pow(2))                  # (n, k)
    kernel = to_device((pdf / pdf.sum(1, keepdim=True)).repeat_interleave(c, 0), x.device)  # (n c, k)
    pad = kernel_size // 2
    planes = F.pad(x.float().view(1, n * c, h, w), [pad, pad, pad, pad], mode='reflect')
    planes = F.conv2d(planes, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)     # vertical
    planes = F.conv2d(planes, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)     # horizontal
    return planes.view(n, c, h, w).round_().clamp_(0, 255).to(torch.uint8)


def apply_three_augment(x: torch.Tensor, params: ThreeAugmentParams, input_size: int) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> the same tensor, each sample through its one op (in place)."""
    for k, name in enumerate(CHOICES):
        sel = torch.nonzero(params.choice == k)[:, 0]
        if not len(sel):
            continue
        idx = to_device(sel, x.device)
        sub = x.index_select(0, idx)
        if name == 'grayscale':
            out = gray_pil(sub).to(torch.uint8).expand(-1, 3, -1, -1)
        elif name == 'solarize':
            out = torch.where(sub < 128, sub, 255 - sub)
        else:
            out = gaussian_blur(sub, params.sigma[sel], blur_kernel_size(input_size))
        x.index_copy_(0, idx, out.contiguous())
    return x
