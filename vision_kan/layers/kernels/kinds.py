"""The one definition of the fused linear kernels' basis kinds (shared by ops.py, triton_kan.py and the layers).

KIND_BSPLINE (KANLinear): slot 0 = SiLU (base branch), slots 1.. = uniform cubic B-splines; params (2, D) =
[first knot; 1 / knot spacing] per feature. KIND_RSWAF (FasterKANLinear): slots = RSWAF functions on a shared grid;
params (K,) = grid points, and the kernel's float argument inv_h.
"""
KIND_BSPLINE = 0
KIND_RSWAF = 1
