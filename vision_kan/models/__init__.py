"""Model families. Importing this package registers every model in timm's registry."""
from . import densekanet, kalnet, kan_cnn, kan_mlp, kanvolver, reskanet, vgg_kan, vit_grkan, vit_kan, vit_kan_stem

# timm files each model under its module's basename; vision_kan.list_models() reads these
MODEL_MODULES = ('vit_kan', 'vit_grkan', 'kan_mlp', 'vgg_kan', 'reskanet', 'kan_cnn', 'vit_kan_stem', 'kalnet',
                 'kanvolver', 'densekanet')
