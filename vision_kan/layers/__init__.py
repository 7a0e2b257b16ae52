"""Building blocks. Never imports from vision_kan.models or the engine."""
from .basis import (
    bernstein, bspline_basis, bspline_basis_auto, bspline_basis_uniform, knots_are_uniform, legendre, powers, rbf,
    relu_bump, rswaf_basis, rswaf_basis_derivative, three_term_polynomials, uniform_knots,
)
from .grkan import GRKANLinear, GroupRational, fit_rational, rational
from .kan_linear import FasterKANLinear, KANLinear, spline_regularization
from .mlp import KAN_LAYERS, KANMlp, kan_mlp_layer
from .poly_kan_linear import KALNLinear, MonomialKANLinear
from .conv_basis import WAVELETS, BSplineBasis, ConvBasis, RBFBasis, ReLUKANBasis, WaveletBasis
from .conv_basis_poly import BernsteinBasis, ChebyshevBasis, GramBasis, JacobiBasis, LegendreBasis
from .kan_conv import BasisKANConv
from .kan_conv_families import (
    CONV_KAN_FAMILIES, BottleNeckKAGNConv1d, BottleNeckKAGNConv2d, BottleNeckKAGNConv3d, BottleNeckKAGNConvNd,
    FastKANConv1d, FastKANConv2d, FastKANConv3d, FastKANConvNd, KABNConv1d, KABNConv2d, KABNConv3d, KABNConvNd,
    KACNConv1d, KACNConv2d, KACNConv3d, KACNConvNd, KAGNConv1d, KAGNConv2d, KAGNConv3d, KAGNConvNd, KAJNConv1d,
    KAJNConv2d, KAJNConv3d, KAJNConvNd, KALNConv1d, KALNConv2d, KALNConv3d, KALNConvNd, KANConv1d, KANConv2d,
    KANConv3d, KANConvNd, ReLUKANConv1d, ReLUKANConv2d, ReLUKANConv3d, ReLUKANConvNd, WavKANConv1d, WavKANConv2d,
    WavKANConv3d, WavKANConvNd,
)
from .kan_attention import KAN_ATTENTION_BLOCKS, KANFocalModulation, KANSelfAttention
from .moe_kan_conv import MoEKANConv
