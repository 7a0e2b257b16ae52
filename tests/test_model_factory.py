"""The model factory: counting parameters, building by name with the keywords each model's constructor takes."""
import dataclasses
from typing import Optional

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer

from vision_kan.layers.grkan import fit_rational
from vision_kan.train.errors import ConfigError
from vision_kan.train.model_factory import constructor_keywords, count_params, create_model, model_class


def test_count_params_trainable_or_all():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))  # 16 + 8 + 10 parameters
    model[2].weight.requires_grad_(False)  # 8 frozen
    assert count_params(model, trainable_only=False) == 34  # BatchNorm's running stats are buffers, not counted
    assert count_params(model) == count_params(model, trainable_only=True) == 26


@pytest.mark.parametrize('name, kwargs, takes_img_size, takes_drop_path', [
    ('kan_cnn4', dict(widths=(4, 4, 4, 4)), False, False),  # a CNN: neither
    ('kan_kalnet_digits', dict(hidden_dims=(6,)), True, False),
    ('vit_kan_tiny', dict(patch_size=8, depth=2, embed_dim=16, num_heads=2), True, True),
    ('resnet18', dict(), False, True),  # a plain timm model
])
def test_create_model_passes_the_keywords_the_class_takes(name, kwargs, takes_img_size, takes_drop_path):
    """main.py hands every model img_size and drop_path_rate: the ones its class does not take are left out (with a
    note for a drop path that would be lost), and the model is the one timm builds from the same seed."""
    notes = []
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, drop_rate=0.0, drop_path_rate=0.1, img_size=16, log=notes.append,
                         **kwargs)
    taken = constructor_keywords(type(model))
    assert ('img_size' in taken, 'drop_path_rate' in taken) == (takes_img_size, takes_drop_path)
    assert len(notes) == (0 if takes_drop_path else 1)
    expected = dict(kwargs, **({'img_size': 16} if takes_img_size else {}),
                    **({'drop_path_rate': 0.1} if takes_drop_path else {}))
    torch.manual_seed(0)
    reference = timm.create_model(name, num_classes=3, drop_rate=0.0, **expected)
    for (key, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), key
    assert model.eval()(torch.randn(2, 1 if 'kalnet' in name else 3, 16, 16)).shape == (2, 3)
    if takes_drop_path:
        assert any(isinstance(m, DropPath) and m.drop_prob > 0 for m in model.modules())


def test_create_model_learns_the_class_of_a_model_the_meta_device_cannot_build():
    """GR-KAN fits its rationals on first use (no data on the meta device): the class comes from a CPU build that
    leaves the random number generator as it was."""
    fit_rational.cache_clear()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert model_class('vit_grkan_tiny', depth=1, embed_dim=16, num_heads=2) is VisionTransformer
    assert torch.equal(torch.get_rng_state(), state)


def test_constructor_keywords_follow_kwargs_to_the_base_and_a_config_dataclass():
    @dataclasses.dataclass
    class Config:
        depth: int = 2
        drop_path_rate: float = 0.0

    class Base(nn.Module):
        def __init__(self, img_size: int = 8, num_classes: int = 10):
            super().__init__()

    class Child(Base):
        def __init__(self, *args, width: int = 4, **kwargs):
            super().__init__(*args, **kwargs)

    class Configured(nn.Module):
        def __init__(self, cfg: Optional[Config] = None, num_classes: int = 10, **kwargs):
            super().__init__()

    assert constructor_keywords(Child) == {'width', 'img_size', 'num_classes'}
    assert constructor_keywords(Configured) == {'cfg', 'num_classes', 'depth', 'drop_path_rate'}  # not nn.Module's


def test_create_model_bad_keyword_is_a_config_error():
    with pytest.raises(ConfigError, match='kan_cnn4.*no_such_keyword'):
        create_model('kan_cnn4', num_classes=3, img_size=16, no_such_keyword=1)
