"""torch.hub entry points, one per vision_kan model:

    model = torch.hub.load('path/to/vision_kan', 'vit_kan_tiny', source='local', num_classes=10)
"""
dependencies = ['torch', 'timm']

import timm as _timm

import vision_kan as _vision_kan


def _entrypoint(name: str):
    def create(pretrained: bool = False, **kwargs):
        return _timm.create_model(name, pretrained=pretrained, **kwargs)
    create.__name__ = name
    create.__doc__ = f'timm.create_model({name!r}, **kwargs); see vision_kan.models.'
    return create


for _name in _vision_kan.list_models():
    globals()[_name] = _entrypoint(_name)
