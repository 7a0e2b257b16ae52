"""Building blocks. Never imports from vision_kan.models or the engine."""
from .basis import (
    bspline_basis, bspline_basis_auto, bspline_basis_uniform, knots_are_uniform, rswaf_basis, rswaf_basis_derivative,
    uniform_knots,
)
from .grkan import GRKANLinear, GroupRational, fit_rational, rational
from .kan_linear import FasterKANLinear, KANLinear, spline_regularization
from .kan_mlp import KAN_LAYERS, KANMlp, kan_mlp_layer
