"""The model factory: counting parameters, building by name with the keywords each model's constructor takes."""
import torch.nn as nn

from vision_kan.train.model_factory import count_params


def test_count_params_trainable_or_all():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))  # 16 + 8 + 10 parameters
    model[2].weight.requires_grad_(False)  # 8 frozen
    assert count_params(model, trainable_only=False) == 34  # BatchNorm's running stats are buffers, not counted
    assert count_params(model) == count_params(model, trainable_only=True) == 26
