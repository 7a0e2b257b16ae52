"""Fused KAN kernels (vision_kan.layers.kernels) against the plain-torch reference path.

The Triton kernels run on CPU through Triton's interpreter, which must be switched on (TRITON_INTERPRET=1) before
Triton is imported: this file therefore runs itself once as a subprocess with that variable set (`python
tests/test_kernels.py` prints one JSON line of errors) and the parametrised tests below read that report. Shapes
are small and odd (token counts and feature sizes that are not multiples of the 16-wide interpreter tiles).

Tolerances: fp32 paths agree to ~1e-6 relative (same maths, other summation order). Under bf16 / fp16 autocast
both paths round the matmul operands, so each is compared with a float64 run of the same layer, and the fused
error must stay within a small multiple of the reference path's own error (see LOWP_FACTOR).
"""
import importlib.util
import json
import os
import sys
import warnings
from typing import Dict, List

import pytest
import torch

from conftest import run_interpreter_worker

HAS_TRITON = importlib.util.find_spec('triton') is not None

# id -> (layer kind, in, out, leading shape, layer kwargs, autocast dtype or None)
CASES = {
    'kan_fp32_bias': ('kan', 19, 23, (2, 37), dict(bias=True), None),
    'kan_fp32_grid3_perfeature': ('kan', 33, 17, (41,), dict(grid_size=3, grid_range=(-2.0, 1.0)), None),
    'kan_bf16_autocast': ('kan', 21, 18, (3, 11), dict(bias=True), torch.bfloat16),
    'fasterkan_fp32_bias': ('fasterkan', 19, 23, (2, 37), dict(bias=True), None),
    'fasterkan_fp32_k5': ('fasterkan', 40, 9, (2, 3, 7), dict(num_grids=5, grid_range=(-1.5, 1.5), denominator=0.7),
                          None),
    'fasterkan_fp16_autocast': ('fasterkan', 18, 35, (29,), dict(bias=True), torch.float16),
}
# cases re-run with a weight-grad kernel variant forced (the default under the interpreter is 't'):
# 'n' = basis tile as the shared-memory operand (triton_kan._dw_kernel)
# 'g' = the basis written by _expand_kernel, then one GEMM per chunk of rows (cap 2000 elements: several chunks),
# for the weight grad and for the forward; for the input grad, dY @ W per chunk then _dx_reduce_kernel
FORCED = {'kan_fp32_bias_dw_n': ('kan_fp32_bias', 'dw', ('n', 16, 16, 16, 1, 1)),
          'fasterkan_fp32_k5_dw_n': ('fasterkan_fp32_k5', 'dw', ('n', 16, 16, 16, 1, 1)),
          'kan_fp32_bias_dw_g': ('kan_fp32_bias', 'dw', ('g', 16, 16, 2000, 1, 1)),
          'kan_bf16_autocast_dw_g': ('kan_bf16_autocast', 'dw', ('g', 16, 16, 2000, 1, 1)),
          'fasterkan_fp16_autocast_dw_g': ('fasterkan_fp16_autocast', 'dw', ('g', 16, 16, 2000, 1, 1)),
          'kan_fp32_bias_fwd_g': ('kan_fp32_bias', 'fwd', ('g', 16, 16, 2000, 1)),
          'kan_bf16_autocast_fwd_g': ('kan_bf16_autocast', 'fwd', ('g', 16, 16, 2000, 1)),
          'fasterkan_fp16_autocast_fwd_g': ('fasterkan_fp16_autocast', 'fwd', ('g', 16, 16, 2000, 1)),
          'kan_fp32_bias_dx_g': ('kan_fp32_bias', 'dx', ('g', 16, 16, 2000, 1)),
          'kan_bf16_autocast_dx_g': ('kan_bf16_autocast', 'dx', ('g', 16, 16, 2000, 1)),
          'fasterkan_fp16_autocast_dx_g': ('fasterkan_fp16_autocast', 'dx', ('g', 16, 16, 2000, 1)),
          'kan_bf16_autocast_dw_g_in_dtype': ('kan_bf16_autocast', 'dw', ('g', 16, 16, 2000, 1, 0))}
FP32_TOL = 2e-5  # relative L2 error, fp32 fused vs fp32 reference
# low precision: fused error vs fp64 <= LOWP_FACTOR * (reference error vs fp64) + one unit roundoff of the dtype.
# Both paths evaluate the basis from x as given (LayerNorm's fp32 output under autocast) and round the basis and
# weights to the autocast dtype; the factor covers the other summation order and rounding points.
LOWP_FACTOR = 2.0
UNIT_ROUNDOFF = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}


# ------------------------------------------------------------------------------------------------------------------
# Worker: runs under TRITON_INTERPRET=1 in a subprocess
# ------------------------------------------------------------------------------------------------------------------

def _make_layer(kind: str, d_in: int, d_out: int, kwargs: Dict, seed: int) -> torch.nn.Module:
    from vision_kan.layers import FasterKANLinear, KANLinear
    torch.manual_seed(seed)
    if kind == 'kan':
        layer = KANLinear(d_in, d_out, **kwargs)
        with torch.no_grad():
            layer.spline_weight.normal_()  # a visible spline term, not the near-zero init
            if layer.bias is not None:
                layer.bias.normal_()
            if kwargs.get('grid_size') == 3:  # each feature its own uniform knots (first knot and spacing)
                steps = torch.arange(layer.grid.shape[1], dtype=torch.float32)
                t0 = -2.5 + torch.rand(d_in, 1)
                h = 0.3 + 0.5 * torch.rand(d_in, 1)
                layer.grid.copy_(t0 + h * steps)
        assert layer.grid_uniform
    else:
        layer = FasterKANLinear(d_in, d_out, **kwargs)
        with torch.no_grad():
            layer.norm.weight.normal_()
            layer.norm.bias.normal_(std=0.5)
            if layer.bias is not None:
                layer.bias.normal_()
    return layer


def _run(layer: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor, backend: str, autocast) -> List:
    """Output and gradients (x first, then every parameter) of one forward/backward in float64 on return."""
    from vision_kan.layers import kernels
    layer.zero_grad()
    x = x.clone().requires_grad_()
    amp = torch.autocast('cpu', dtype=autocast or torch.bfloat16, enabled=autocast is not None)
    with kernels.backend(layer, backend), amp:
        y = layer(x)
    (y.float() * grad_out).sum().backward()
    return [y.detach().double(), x.grad.double()] + [p.grad.double() for p in layer.parameters()]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert torch.isfinite(a).all(), 'non-finite values'
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _check_case(case: str) -> Dict[str, float]:
    """{tensor name: error measure <= 1 when passing} for one case."""
    if case in FORCED:
        from vision_kan.layers.kernels import triton_kan
        base, kernel, config = FORCED[case]
        with triton_kan.forced_config(kernel, config):
            return _check_case(base)
    kind, d_in, d_out, lead, kwargs, autocast = CASES[case]
    layer = _make_layer(kind, d_in, d_out, kwargs, seed=len(case))
    x = 1.4 * torch.randn(*lead, d_in)  # reaches outside the grid too (basis 0 there)
    grad_out = torch.randn(*lead, d_out)
    names = ['y', 'x'] + [n for n, _ in layer.named_parameters()]
    fused = _run(layer, x, grad_out, 'fused', autocast)
    ref = _run(layer, x, grad_out, 'reference', autocast)
    if autocast is None:
        return {n: _rel(f, r) / FP32_TOL for n, f, r in zip(names, fused, ref)}
    exact = _run(layer.double(), x.double(), grad_out.double(), 'reference', None)
    tol = UNIT_ROUNDOFF[autocast]
    return {n: _rel(f, e) / (LOWP_FACTOR * _rel(r, e) + tol) for n, f, r, e in zip(names, fused, ref, exact)}


def _check_compile() -> Dict[str, float]:
    """torch.compile(fullgraph=True) of small KAN-ViTs on the fused path: no graph break, the custom ops in the
    graph, same output and gradients as the reference path. {name: error measure <= 1 when passing}."""
    import timm
    import vision_kan  # noqa: F401  (registers the models)
    from vision_kan.layers import kernels
    graphs: List[str] = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm.code)
        return torch._dynamo.lookup_backend('aot_eager')(gm, example_inputs)

    out = {}
    for name in ('vit_kan_tiny', 'vit_fasterkan_tiny'):
        torch.manual_seed(0)
        model = timm.create_model(name, img_size=16, patch_size=8, depth=2, embed_dim=24, num_heads=2,
                                  num_classes=5)
        x = torch.randn(3, 3, 16, 16)
        graphs.clear()
        with kernels.backend(model, 'fused'):
            y = torch.compile(model, fullgraph=True, backend=recording_backend)(x)
        y.sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        with kernels.backend(model, 'reference'):
            y_ref = model(x)
        y_ref.sum().backward()
        out[f'{name}_ops_in_graph'] = 0.0 if any('vision_kan.basis_linear' in g for g in graphs) else 2.0
        out[f'{name}_y'] = _rel(y.detach(), y_ref.detach()) / FP32_TOL
        out[f'{name}_grads'] = max(_rel(g, p.grad) for g, p in zip(grads, model.parameters())) / FP32_TOL
    return out


def _check_nonuniform_fallback() -> Dict[str, float]:
    """After update_grid the knots are not uniform: the fused backend warns once and runs the reference path."""
    from vision_kan.layers import kernels
    layer = _make_layer('kan', 7, 5, {}, seed=3)
    x = torch.randn(50, 7) ** 3
    layer.update_grid(x)
    assert not layer.grid_uniform
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with kernels.backend(layer, 'fused'):
            y1, y2 = layer(x), layer(x)
    with kernels.backend(layer, 'reference'):
        y_ref = layer(x)
    n_warn = sum('non-uniform grid' in str(w.message) for w in caught)
    return {'warned_once': 0.0 if n_warn == 1 else 2.0, 'same_as_reference': float(not torch.equal(y1, y_ref)) * 2,
            'repeat': float(not torch.equal(y1, y2)) * 2}


def _check_two_models() -> Dict[str, float]:
    """Two copies of one small KAN-ViT in one process, one 'reference' and one 'fused', at the same time: called in
    turn, one inside the other's `backend` block, and concurrently from two threads. The kernel runs for the fused
    copy only (counted per thread), and the two agree to fp32 tolerance."""
    import copy
    import threading
    import timm
    import vision_kan  # noqa: F401  (registers the models)
    from vision_kan.layers import kan_linear, kernels
    torch.manual_seed(0)
    slow = timm.create_model('vit_kan_tiny', img_size=16, patch_size=8, depth=1, embed_dim=24, num_heads=2,
                             num_classes=5)
    fast = kernels.set_backend(copy.deepcopy(slow), 'fused')
    kernels.set_backend(slow, 'reference')
    x = torch.randn(2, 3, 16, 16)
    real_call, callers = kan_linear.basis_linear_call, []

    def counting_call(*args):
        callers.append(threading.get_ident())
        return real_call(*args)

    kan_linear.basis_linear_call = counting_call
    try:
        with torch.no_grad():
            y_fast, y_slow = fast(x), slow(x)
            kernel_calls_in_turn = len(callers)
            with kernels.backend(slow, 'auto'):  # the other model's block leaves `fast` as it was
                y_fast2 = fast(x)
            callers.clear()
            outputs: Dict[str, List[torch.Tensor]] = {'slow': [], 'fast': []}
            idents: Dict[str, int] = {}

            def work(name: str, model: torch.nn.Module) -> None:
                idents[name] = threading.get_ident()
                with torch.no_grad():
                    outputs[name] += [model(x) for _ in range(3)]

            threads = [threading.Thread(target=work, args=(n, m)) for n, m in (('slow', slow), ('fast', fast))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        kan_linear.basis_linear_call = real_call
    return {
        'fused_ran_for_fast_only': 0.0 if kernel_calls_in_turn == 2 else 2.0,  # fc1, fc2 of the fused copy
        'y': _rel(y_fast, y_slow) / FP32_TOL,
        'untouched_by_other_block': float(not torch.equal(y_fast, y_fast2)) * 2,
        'threads_kernel_in_fast_only': 0.0 if len(callers) == 6 and set(callers) == {idents['fast']} else 2.0,
        'threads_y': max(_rel(f, y_slow) / FP32_TOL for f in outputs['fast']) +
                     max(float(not torch.equal(o, y_slow)) * 2 for o in outputs['slow']),
    }


def _check_compile_follows_the_attribute() -> Dict[str, float]:
    """One torch.compile'd layer, its kernel_backend changed between calls: Dynamo guards on the attribute and
    recompiles, so each call takes the path the layer says (no stale graph, no graph break)."""
    from vision_kan.layers import kernels
    graphs: List[str] = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm.code)
        return torch._dynamo.lookup_backend('aot_eager')(gm, example_inputs)

    layer = kernels.set_backend(_make_layer('fasterkan', 6, 5, {}, seed=4), 'reference')
    net = torch.compile(layer, fullgraph=True, backend=recording_backend)
    x = torch.randn(7, 6)
    with torch.no_grad():
        y_ref = net(x)
        in_ref = any('vision_kan.basis_linear' in g for g in graphs)
        y_fused = kernels.set_backend(net, 'fused')(x)
        in_fused = any('vision_kan.basis_linear' in g for g in graphs)
    return {'reference_graph_without_op': 2.0 if in_ref else 0.0, 'fused_graph_with_op': 0.0 if in_fused else 2.0,
            'recompiled': 0.0 if len(graphs) == 2 else 2.0, 'y': _rel(y_fused, y_ref) / FP32_TOL}


def _check_opcheck() -> Dict[str, float]:
    """torch.library.opcheck of the forward custom op (schema, fake kernel, autograd registration) per kind."""
    from vision_kan.layers import kernels
    out = {}
    torch.manual_seed(0)
    for kind, j, params in ((kernels.KIND_BSPLINE, 9, torch.stack([torch.full((5,), -2.2), torch.full((5,), 2.5)])),
                            (kernels.KIND_RSWAF, 4, torch.linspace(-1.0, 1.0, 4))):
        x = torch.randn(7, 5, requires_grad=True)
        w = torch.randn(j, 3, 5, requires_grad=True)
        bias = torch.randn(3, requires_grad=True)
        try:
            torch.library.opcheck(torch.ops.vision_kan.basis_linear.default, (x, w, params, bias, kind, 1.5))
            out[f'kind{kind}'] = 0.0
        except Exception as exc:  # reported by the parent test
            print(f'opcheck kind {kind}: {exc}', file=sys.stderr)
            out[f'kind{kind}'] = 2.0
    return out


def _worker() -> Dict[str, Dict[str, float]]:
    assert os.environ.get('TRITON_INTERPRET') == '1', 'the worker must run under TRITON_INTERPRET=1'
    torch.set_num_threads(1)
    report = {case: _check_case(case) for case in list(CASES) + list(FORCED)}
    report['opcheck'] = _check_opcheck()
    report['compile'] = _check_compile()
    report['nonuniform_fallback'] = _check_nonuniform_fallback()
    report['two_models'] = _check_two_models()
    report['compile_follows_attribute'] = _check_compile_follows_the_attribute()
    return report


if __name__ == '__main__':
    print(json.dumps(_worker()))
    sys.exit(0)


# ------------------------------------------------------------------------------------------------------------------
# Tests (main pytest process)
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def interpreter_report() -> Dict[str, Dict[str, float]]:
    if not HAS_TRITON:
        pytest.skip('triton is not importable: the fused kernels cannot run (reference path only)')
    return run_interpreter_worker(__file__)


def _assert_report(report: Dict[str, float]) -> None:
    bad = {k: v for k, v in report.items() if not v <= 1.0}  # `not <=` also catches NaN
    assert not bad, f'errors over tolerance (measure > 1): {bad}; all: {report}'


@pytest.mark.parametrize('case', list(CASES) + list(FORCED))
def test_fused_matches_reference(interpreter_report, case):
    """Forward and every gradient (x, weights, scaler, bias, LayerNorm) of the fused kernels match the reference."""
    report = interpreter_report[case]
    spec = CASES[FORCED[case][0] if case in FORCED else case]
    kind = spec[0]
    expected = {'y', 'x', 'bias'} if 'bias' in spec[4] else {'y', 'x'}
    expected |= {'base_weight', 'spline_weight', 'spline_scaler'} if kind == 'kan' else {'weight', 'norm.weight',
                                                                                          'norm.bias'}
    assert set(report) == expected
    _assert_report(report)


def test_custom_op_passes_opcheck(interpreter_report):
    _assert_report(interpreter_report['opcheck'])


def test_compile_fullgraph_uses_fused_ops(interpreter_report):
    _assert_report(interpreter_report['compile'])


def test_nonuniform_grid_falls_back_with_one_warning(interpreter_report):
    _assert_report(interpreter_report['nonuniform_fallback'])


def test_two_models_take_their_own_backends_at_once(interpreter_report):
    _assert_report(interpreter_report['two_models'])


def test_compiled_layer_recompiles_when_its_backend_changes(interpreter_report):
    _assert_report(interpreter_report['compile_follows_attribute'])


# -- dispatch API, no interpreter needed --------------------------------------------------------------------------

def test_set_backend_rejects_unknown_name():
    from vision_kan.layers import KANLinear, kernels
    layer = KANLinear(4, 3)
    for call in (lambda: kernels.set_backend(layer, 'cuda'), lambda: kernels.backend(layer, 'cuda').__enter__(),
                 lambda: KANLinear(4, 3, kernel_backend='cuda')):
        with pytest.raises(ValueError, match=r"kernel backend must be one of \('auto', 'reference', 'fused'\)"):
            call()
    assert layer.kernel_backend == 'auto'
    with pytest.raises(TypeError, match='nn.Module'):
        kernels.set_backend('fused', layer)  # the pre-model argument order


def test_backend_context_restores_each_layers_value_on_error():
    """The context sets every fused-capable layer and gives each back its own value, also on an exception."""
    import timm
    import vision_kan  # noqa: F401  (registers the models)
    from vision_kan.layers import kernels
    model = timm.create_model('vit_kan_tiny', img_size=16, patch_size=8, depth=2, embed_dim=24, num_heads=2,
                              num_classes=5)
    first, second = model.blocks[0].mlp.fc1, model.blocks[1].mlp.fc1
    second.kernel_backend = 'fused'
    layers = [m for m in model.modules() if hasattr(m, 'kernel_backend')]
    assert len(layers) == 4  # fc1 and fc2 of two blocks
    with pytest.raises(KeyError):
        with kernels.backend(model, 'reference') as entered:
            assert entered is model and all(m.kernel_backend == 'reference' for m in layers)
            raise KeyError('inside')
    assert second.kernel_backend == 'fused' and first.kernel_backend == 'auto'
    assert kernels.set_backend(model, 'reference') is model
    assert all(m.kernel_backend == 'reference' for m in layers)


def _every_fused_capable_layer() -> torch.nn.Sequential:
    from vision_kan.layers import FasterKANLinear, GRKANLinear, KANLinear
    from vision_kan.layers.kan_conv_families import BottleNeckKAGNConv2d
    torch.manual_seed(0)
    return torch.nn.Sequential(KANLinear(4, 4), FasterKANLinear(4, 4), GRKANLinear(4, 4, groups=2),
                               BottleNeckKAGNConv2d(4, 4, 3, padding=1, min_internal=2))


def test_backend_travels_with_the_model_not_its_state_dict():
    """kernel_backend is a plain attribute of each layer: set on all of them (nested GroupRational and bottleneck
    inner conv included), kept by .to() / deepcopy / timm's EMA copy / torch.compile's wrapper, never in the
    state_dict (a checkpoint loads into a model of another backend and leaves its backend alone), shown in repr."""
    import copy
    from vision_kan.layers import kernels
    from vision_kan.train.ema import KanModelEma
    model = _every_fused_capable_layer()
    fresh_state = _every_fused_capable_layer().state_dict()
    layers = lambda m: [(n, type(mod).__name__, mod.kernel_backend)  # noqa: E731
                        for n, mod in m.named_modules() if hasattr(mod, 'kernel_backend')]
    assert {t for _, t, _ in layers(model)} == {'KANLinear', 'FasterKANLinear', 'GroupRational',
                                               'BottleNeckKAGNConv2d', 'KAGNConvNd'}
    kernels.set_backend(model, 'reference')
    assert all(b == 'reference' for _, _, b in layers(model))
    state = model.state_dict()
    assert list(state) == list(fresh_state) and all(torch.equal(state[k], fresh_state[k]) for k in state)
    assert not any('backend' in k for k in state)
    assert layers(model.to(torch.float64)) == layers(model)
    assert layers(copy.deepcopy(model)) == layers(model)
    assert layers(KanModelEma(model, decay=0.9).module) == layers(model)
    other = kernels.set_backend(_every_fused_capable_layer(), 'fused')
    other.load_state_dict(model.float().state_dict())
    assert all(b == 'fused' for _, _, b in layers(other))
    kernels.set_backend(torch.compile(other), 'auto')  # reaches the layers through OptimizedModule
    assert all(b == 'auto' for _, _, b in layers(other))
    assert 'kernel_backend=reference' in repr(model) and 'kernel_backend' not in repr(other)


@pytest.mark.parametrize('kind', ['kan', 'fasterkan'])
def test_auto_on_cpu_is_the_reference_path(kind, monkeypatch):
    """'auto' never takes the (slow) interpreter: on CPU it is bit-identical to 'reference'."""
    from vision_kan.layers import kan_linear, kernels
    called: List[int] = []
    monkeypatch.setattr(kan_linear, 'basis_linear_call', lambda *a: called.append(1))
    layer = _make_layer(kind, 6, 4, {}, seed=0)
    x = torch.randn(5, 6)
    with kernels.backend(layer, 'auto'):
        y_auto = layer(x)
    with kernels.backend(layer, 'reference'):
        y_ref = layer(x)
    assert not called and torch.equal(y_auto, y_ref)


def test_fused_without_triton_or_interpreter_raises(monkeypatch):
    from vision_kan.layers import kernels
    layer = _make_layer('kan', 6, 4, {}, seed=0)
    monkeypatch.setattr(kernels.dispatch, '_triton_importable', lambda: False)  # as on an install without Triton
    assert not kernels.fused_available(torch.zeros(1))
    with kernels.backend(layer, 'fused'), pytest.raises(RuntimeError, match='fused'):
        layer(torch.randn(3, 6))
    with kernels.backend(layer, 'auto'):
        assert layer(torch.randn(3, 6)).shape == (3, 4)


def test_fused_available_on_cpu_follows_the_interpreter(monkeypatch):
    from vision_kan.layers import kernels
    monkeypatch.setattr(kernels.dispatch, '_triton_importable', lambda: True)
    monkeypatch.setattr(kernels.dispatch, '_interpreter_on', lambda: False)
    assert not kernels.fused_available(torch.zeros(1))
    monkeypatch.setattr(kernels.dispatch, '_interpreter_on', lambda: True)
    assert kernels.fused_available(torch.zeros(1))
    assert not kernels.fused_available(torch.zeros(1, device='meta'))


def test_autotuner_times_the_gemm_variants_unless_switched_off(monkeypatch):
    pytest.importorskip('triton')
    from vision_kan.layers.kernels import triton_kan
    timed = []
    monkeypatch.setattr(triton_kan, '_interpreting', lambda t: False)  # take the tuning path, launch nothing
    monkeypatch.setattr(torch.cuda, 'is_current_stream_capturing', lambda: False)
    monkeypatch.setattr(triton_kan.triton.testing, 'do_bench', lambda fn, **kw: (fn(), float(len(timed)))[1])
    ref = torch.zeros(1)
    try:
        triton_kan._pick('dw', ('test', 1), triton_kan._DW_CONFIGS, timed.append, ref)
        assert any(c[0] == 'g' for c in timed) and any(c[0] == 't' for c in timed)
        triton_kan.set_gemm_variants(False)
        timed.clear()
        triton_kan._pick('dw', ('test', 1), triton_kan._DW_CONFIGS, timed.append, ref)  # tuned again: cleared
        assert timed and not any(c[0] == 'g' for c in timed)
    finally:
        triton_kan.set_gemm_variants(True)  # also forgets the choices made here
    assert ('dw', 'test', 1) not in triton_kan.tuned_configs()


def test_autotuner_times_gpu_time_alone_for_the_compiled_path(monkeypatch):
    """Inside tuning_by_gpu_time (ops.py's trace-time tuning) candidates are timed by CUDA-graph replay, not the wall
    clock, and the choice is kept apart from the eager one (its key ends in 'gpu time')."""
    pytest.importorskip('triton')
    from vision_kan.layers.kernels import triton_kan
    timers = []
    monkeypatch.setattr(triton_kan, '_interpreting', lambda t: False)
    monkeypatch.setattr(torch.cuda, 'is_current_stream_capturing', lambda: False)
    monkeypatch.setattr(triton_kan.triton.testing, 'do_bench', lambda fn, **kw: (timers.append('wall'), fn(), 1.0)[2])
    monkeypatch.setattr(triton_kan.triton.testing, 'do_bench_cudagraph',
                        lambda fn, **kw: (timers.append('gpu'), fn(), 1.0)[2])
    launched = []
    ref = torch.zeros(1)
    try:
        with triton_kan.tuning_by_gpu_time():
            triton_kan._pick('fwd', ('gpu-test',), triton_kan._FWD_CONFIGS, launched.append, ref)
        assert set(timers) == {'gpu'} and len(timers) == len(triton_kan._FWD_CONFIGS)
        assert ('fwd', 'gpu-test', 'gpu time') in triton_kan.tuned_configs()
        assert ('fwd', 'gpu-test') not in triton_kan.tuned_configs()
        timers.clear()
        triton_kan._pick('fwd', ('gpu-test',), triton_kan._FWD_CONFIGS, launched.append, ref)  # eager: own tuning
        assert set(timers) == {'wall'}
    finally:
        triton_kan.set_gemm_variants(True)  # forgets the choices made here
