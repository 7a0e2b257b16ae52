"""torch.hub entry points, one per vision_kan model:

    model = torch.hub.load('path/to/vision_kan', 'vit_kan_tiny', source='local', num_classes=10)
    model = torch.hub.load('path/to/vision_kan', 'vit_grkan_tiny', source='local', weights='run/model.safetensors')
    model = torch.hub.load('path/to/vision_kan', 'vit_grkan_tiny', source='local', pretrained=True)  # KAT-T

`weights` is a file timm's loader reads (model.safetensors from main.py or vision_kan.tools.convert, or a published
checkpoint of the model's family); the model then has the architecture of the published tag (e.g. KAT's rationals).
"""
dependencies = ['torch', 'timm']

import timm as _timm

import vision_kan as _vision_kan


def _entrypoint(name: str):
    def create(pretrained: bool = False, weights: str = '', **kwargs):
        if weights:  # timm's file override; keep the file's classes unless num_classes says otherwise
            overlay = dict(file=weights, num_classes=kwargs.get('num_classes', 1000))
            return _timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        return _timm.create_model(name, pretrained=pretrained, **kwargs)
    create.__name__ = name
    create.__doc__ = f'timm.create_model({name!r}, **kwargs); see vision_kan.models.'
    return create


for _name in _vision_kan.list_models():
    globals()[_name] = _entrypoint(_name)
