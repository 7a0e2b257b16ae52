"""The embedded demo's data: scikit-learn's bundled 8x8 handwritten digits written as an ImageNet-layout folder.

`load_digits()` ships inside scikit-learn (1797 images, 10 classes, pixel values 0..16), so the demo needs no
download. The split is fixed (stratified, seed 0): 1437 train / 360 val images.
"""
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Union

__all__ = ['write_digits_imagefolder']

_MARKER = 'digits_split.json'


def write_digits_imagefolder(root: Union[str, Path], val_fraction: float = 0.2, seed: int = 0) -> Dict[str, int]:
    """Write the digits as PNGs into root/{train,val}/{0..9}/ (skipped when a complete copy is already there).

    The folder is built in a temporary sibling directory and renamed into place, so an interrupted write never
    leaves a half-written dataset behind.

    Args:
        root: destination folder; created if missing.
        val_fraction: share of each class held out for validation.
        seed: seed of the stratified split.

    Returns:
        The number of images per split, e.g. {'train': 1437, 'val': 360}.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    root = Path(root)
    split_info = {'val_fraction': val_fraction, 'seed': seed}
    marker = root / _MARKER
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get('split') == split_info:
            return saved['counts']
        raise ValueError(f'{root} holds a digits copy with another split ({saved.get("split")}); remove it first')
    if root.exists() and any(root.iterdir()):
        raise ValueError(f'{root} exists and is not a digits demo folder; choose another --data-path')

    digits = load_digits()
    pixels = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    idx_train, idx_val = train_test_split(
        np.arange(len(pixels)), test_size=val_fraction, random_state=seed, stratify=digits.target)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{root.name}.tmp-', dir=root.parent))
    try:
        counts = {}
        for split, indices in (('train', idx_train), ('val', idx_val)):
            for c in range(10):
                (tmp / split / str(c)).mkdir(parents=True)
            for i in indices:
                Image.fromarray(pixels[i], mode='L').save(tmp / split / str(digits.target[i]) / f'{i:04d}.png')
            counts[split] = int(len(indices))
        (tmp / _MARKER).write_text(json.dumps({'split': split_info, 'counts': counts}))
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts
