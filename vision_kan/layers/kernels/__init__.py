"""Fused GPU kernels (Triton) for the KAN layers, with the plain-torch reference path as fallback and oracle.

    from vision_kan.layers import kernels
    kernels.set_backend(model, 'reference')    # or 'auto' (default: fused on CUDA with Triton), 'fused'
    with kernels.backend(model, 'fused'): y = model(x)

The choice is the model's: each fused-capable layer carries its own `kernel_backend` (see `dispatch`).

The kernels never write the (tokens x J*d) basis tensor: the forward computes each basis tile in registers and
feeds it to the matmul; the backward recomputes it for dW and contracts dY @ W_j with the basis derivative for dx.
They are torch.library ops with autograd, so torch.compile traces a KAN-ViT without graph breaks: custom ops with
fake kernels (`torch.ops.vision_kan.basis_linear*`), and triton_ops whose kernels inductor launches itself
(`rational_*`); eager calls take a lighter autograd.Function over the same kernels. Every fused-capable layer asks
`fused_path(self, x)` and packs its own operands. Triton is imported on first use only.
"""
from .dispatch import BACKENDS, backend, check_backend, compute_dtype, fused_available, fused_path, set_backend
from .kinds import KIND_BSPLINE, KIND_RSWAF
from .ops import basis_linear, basis_linear_call, basis_linear_dw, basis_linear_dx

__all__ = [
    'BACKENDS', 'backend', 'check_backend', 'compute_dtype', 'fused_available', 'fused_path', 'set_backend',
    'basis_linear', 'basis_linear_call', 'basis_linear_dx', 'basis_linear_dw', 'KIND_BSPLINE', 'KIND_RSWAF',
]
