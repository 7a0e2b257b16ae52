"""Model families. Importing this package registers every model in timm's registry."""
from . import kan_mlp, vit_grkan, vit_kan

# timm files each model under its module's basename; vision_kan.list_models() reads these
MODEL_MODULES = ('vit_kan', 'vit_grkan', 'kan_mlp')
