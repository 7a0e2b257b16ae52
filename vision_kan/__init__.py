"""vision_kan: Kolmogorov-Arnold Network vision models for timm, and a DeiT-style engine to train them.

    import timm, vision_kan   # registers every vision_kan model in timm
    model = timm.create_model('vit_kan_tiny', num_classes=10, img_size=32, patch_size=4)
"""
import fnmatch
from typing import List

from . import layers, models

__version__ = '0.1.0'


def list_models(pattern: str = '*') -> List[str]:
    """The model names vision_kan registers in timm, optionally filtered by a glob pattern."""
    import timm
    names = {n for module in models.MODEL_MODULES for n in timm.list_models(module=module)}
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))
