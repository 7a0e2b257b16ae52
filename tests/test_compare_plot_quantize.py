"""The comparison tool, int8 evaluation and the phi(x) plot, on checkpoints main.py writes in the test."""
import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

import main
import vision_kan  # noqa: F401
from conftest import QUIET, make_image_folder
from vision_kan.tools import compare, plot_kan, quantize
from vision_kan.layers import FasterKANLinear, GRKANLinear, KANLinear
from vision_kan.layers.kan_conv_families import KACNConv2d, KAGNConv2d
from vision_kan.layers import KALNLinear, MonomialKANLinear

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
TINY = ['--input-size', '16', '--epochs', '2', '--batch-size', '8', '--model-kwargs', 'widths=[4,8,8,8]',
        '--drop-path', '0', '--lr', '0.05', '--no-scale-lr']


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """A tiny kan_cnn4 and its twin, each trained 2 epochs by main.py on a generated 3-class ImageFolder."""
    root = tmp_path_factory.mktemp('compare')
    data = make_image_folder(root / 'data', num_classes=3, train_per_class=8, val_per_class=4, size=16)
    threads = torch.get_num_threads()
    try:
        for name in ('kan_cnn4', 'kan_cnn4_twin'):
            args = ['--data-path', str(data), '--output-dir', str(root / name), *QUIET, '--model', name, *TINY]
            assert main.main(args) == 0
    finally:
        torch.set_num_threads(threads)  # main.py --cpu-threads 1 is process-wide
    return root, data


def _best_epoch_stats(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / 'log.txt').read_text().splitlines() if line.strip()]
    return max(rows, key=lambda r: r['test_acc1'])  # best.pth holds the first epoch reaching the best top-1


def test_compare_writes_json_and_pngs_that_agree_with_main(runs, capsys):
    root, data = runs
    out = root / 'report'
    ckpts = [str(root / 'kan_cnn4' / 'best.pth'), str(root / 'kan_cnn4_twin' / 'best.pth')]
    assert compare.main(['--checkpoints', *ckpts, '--data-path', str(data / 'val'), '--output-dir', str(out)]) == 0
    assert '| kan_cnn4_twin |' in capsys.readouterr().out

    report = json.loads((out / 'compare.json').read_text())
    assert {'date', 'device', 'data_path', 'num_images', 'reference', 'models', 'differences'} <= set(report)
    assert report['num_images'] == 12 and report['reference'] == 'kan_cnn4'
    kan, twin = report['models']
    for row, name in ((kan, 'kan_cnn4'), (twin, 'kan_cnn4_twin')):
        assert {'name', 'checkpoint', 'model', 'params', 'params_m', 'size_mb', 'loss', 'acc1', 'acc5', 'n'} <= set(row)
        assert row['model'] == name and row['n'] == 12 and row['size_mb'] > 0
        # the same numbers main.py logged for the epoch it saved as best.pth (same transform, same images)
        best = _best_epoch_stats(root / name)
        assert row['acc1'] == pytest.approx(best['test_acc1'], abs=1e-6)
        assert row['acc5'] == pytest.approx(best['test_acc5'], abs=1e-6)
        assert row['loss'] == pytest.approx(best['test_loss'], rel=1e-5)
    model = timm.create_model('kan_cnn4', num_classes=3, widths=[4, 8, 8, 8])
    assert kan['params'] == sum(p.numel() for p in model.parameters())
    (diff,) = report['differences']
    assert diff['name'] == 'kan_cnn4_twin' and diff['reference'] == 'kan_cnn4'
    for key in ('params_m', 'size_mb', 'loss', 'acc1', 'acc5'):
        assert diff[key] == pytest.approx(twin[key] - kan[key])
    for key in ('params_m', 'size_mb', 'loss', 'acc1', 'acc5', 'overview'):
        png = out / f'compare_{key}.png'
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 2000


def test_compare_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys):
    root, data = runs
    best = str(root / 'kan_cnn4' / 'best.pth')
    two_classes = make_image_folder(tmp_path / 'two', num_classes=2, train_per_class=1, val_per_class=2)
    cases = [
        (['--checkpoints', best], 'two or more'),
        (['--checkpoints', best, str(root / 'kan_cnn4' / 'log.txt')], 'log.txt'),
        (['--checkpoints', best, str(tmp_path / 'missing.pth')], 'does not exist'),
        (['--checkpoints', best, best, '--data-path', str(tmp_path / 'nowhere')], 'does not exist'),
        (['--checkpoints', best, best, '--data-path', str(two_classes / 'val')], '2 classes'),
        (['--checkpoints', best, best, '--model', 'kan_cnn4_twin'], 'does not match'),
        (['--checkpoints', best, best, '--batch-size', '0'], '--batch-size 0: must be >= 1'),
        (['--checkpoints', best, best, '--num-workers', '-1'], '--num-workers -1: must be >= 0'),
    ]
    for argv, fragment in cases:
        if '--data-path' not in argv:
            argv = argv + ['--data-path', str(data / 'val')]
        assert compare.main(argv + ['--output-dir', str(tmp_path / 'out')]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith('error: ') and fragment in err and '\n' not in err, err


def test_int8_evaluation_reports_sizes_and_keeps_accuracy_close(runs, tmp_path, capsys):
    root, data = runs
    out = tmp_path / 'int8.json'
    argv = ['--checkpoint', str(root / 'kan_cnn4' / 'best.pth'), '--data-path', str(data / 'val'),
            '--output-json', str(out)]
    assert quantize.main(argv) == 0
    assert 'MB ->' in capsys.readouterr().out
    result = json.loads(out.read_text())
    # base and basis weights of the 4 KAN convs; the tiny KANLinear head's tensors (< 256 values) stay fp32
    assert result['weight_only'] == 8 and result['dynamic_linear'] == 0
    assert result['size_mb_int8'] < 0.6 * result['size_mb_fp32']
    assert result['int8']['n'] == result['fp32']['n'] == 12
    assert abs(result['int8']['acc1'] - result['fp32']['acc1']) <= 100.0 / 12 + 1e-6  # at most one image flips
    assert quantize.main(['--checkpoint', str(tmp_path / 'none.pth'), '--data-path', str(data / 'val')]) == 2


def test_main_eval_quantize_int8(runs, capsys):
    root, data = runs
    argv = ['--eval', '--resume', str(root / 'kan_cnn4' / 'best.pth'), '--data-path', str(data), *QUIET,
            '--model', 'kan_cnn4', '--input-size', '16', '--batch-size', '8', '--model-kwargs', 'widths=[4,8,8,8]',
            '--quantize', 'int8']
    threads = torch.get_num_threads()
    try:
        assert main.main(argv) == 0
        out = capsys.readouterr().out
        assert 'int8 (CPU) on 12 val images: acc1' in out and 'MB ->' in out
        assert main.main(['--data-path', str(data), '--quantize', 'int8', *QUIET]) == 2  # training: refused
        assert '--quantize int8 works with --eval' in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)


def test_int8_model_matches_float_model_and_stores_int8():
    torch.manual_seed(0)
    model = timm.create_model('vit_fasterkan_tiny_kagnstem', img_size=32, patch_size=8, depth=2, num_classes=10)
    model.eval()
    qmodel, report = quantize.quantize_int8(model)
    assert report['dynamic_linear'] > 0 and report['weight_only'] > 0
    assert report['size_mb_int8'] < 0.35 * report['size_mb_fp32']
    state = qmodel.state_dict()
    assert any(k.endswith('_int8') and v.dtype == torch.int8 for k, v in state.items())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), qmodel(x)
    assert ((out - ref).norm() / ref.norm()).item() < 0.2
    # weight-only int8 alone is close: per-row scales, fp32 compute
    qmodel, _ = quantize.quantize_int8(model, dynamic=False)
    with torch.no_grad():
        assert ((qmodel(x) - ref).norm() / ref.norm()).item() < 0.05
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the float model is left as it was


def test_plot_tool_writes_png_and_lists_layers(runs, tmp_path, capsys):
    root, _ = runs
    ckpt = str(root / 'kan_cnn4' / 'best.pth')
    for layer in ('head.fc', 'layers.1'):
        png = tmp_path / f'{layer}.png'
        assert plot_kan.main(['--checkpoint', ckpt, '--layer', layer, '--output', str(png), '--max-out', '3']) == 0
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    assert plot_kan.main(['--checkpoint', ckpt, '--list']) == 0
    assert 'head.fc\tKANLinear' in capsys.readouterr().out
    for layer, fragment in (('head', 'not a KAN layer'), ('nope', 'not a module')):
        assert plot_kan.main(['--checkpoint', ckpt, '--layer', layer]) == 2
        assert fragment in capsys.readouterr().err


N = 7


def _constant_inputs(lo: float, hi: float, features: int) -> torch.Tensor:
    """Sample n has every feature equal to t_n, t the plot's grid: then sum_i phi_{o,i}(t_n) = output o."""
    return torch.linspace(lo, hi, N, dtype=torch.float64)[:, None].expand(-1, features).contiguous()


@pytest.mark.parametrize('layer', [KANLinear(5, 3), KALNLinear(5, 3, norm_act=False),
                                   MonomialKANLinear(5, 3, norm_act=False)])
def test_plotted_functions_sum_to_the_layer_output(layer):
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the init
    _, phi, _ = plot_kan.edge_functions(layer, range(3), range(5), num=N, x_range=(-0.9, 0.9))
    with torch.no_grad():
        out = layer(_constant_inputs(-0.9, 0.9, 5))  # (N, 3)
    bias = layer.base.bias if isinstance(layer, MonomialKANLinear) else 0.0  # a constant, on no edge
    torch.testing.assert_close(phi.sum(1).T, out - bias)


@pytest.mark.parametrize('conv', [KAGNConv2d, KACNConv2d])
def test_plotted_conv_functions_are_the_response_to_a_constant_patch(conv):
    torch.manual_seed(0)
    layer = conv(3, 4, 3, padding=1).double()
    _, phi, _ = plot_kan.edge_functions(layer, range(4), range(3), num=N, x_range=(-1.5, 1.5))
    x = _constant_inputs(-1.5, 1.5, 3)[:, :, None, None].expand(-1, -1, 5, 5)  # (N, 3, 5, 5) constant images
    with torch.no_grad():
        centre = layer(x.contiguous())[:, :, 2, 2]  # away from the zero padding: every tap sees t_n
    torch.testing.assert_close(phi.sum(1).T, centre)


def test_plotted_rswaf_and_rational_functions():
    torch.manual_seed(0)
    fk = FasterKANLinear(4, 2).double()
    _, phi, label = plot_kan.edge_functions(fk, range(2), range(4), num=N, x_range=(-1.0, 1.0))
    u = torch.linspace(-1.0, 1.0, N, dtype=torch.float64)
    basis = 1.0 - torch.tanh((u[:, None] - fk.grid) * fk.inv_h) ** 2  # (N, K)
    w = fk.weight.view(2, 4, -1)
    torch.testing.assert_close(phi, torch.einsum('oik,nk->oin', w, basis).detach())
    assert 'LayerNorm' in label
    t = torch.linspace(-2.0, 2.0, N, dtype=torch.float64)
    for denominator in ('abs_sum', 'sum_abs'):  # ours and KAT's released kernels' (published weights)
        gr = GRKANLinear(16, 4, groups=4, rational_init='swish', rational_denominator=denominator).double()
        with torch.no_grad():
            gr.rational.weight_denominator.copy_(torch.randn(4, 4, dtype=torch.float64))  # signs where they differ
            expected = gr.rational(t[:, None].expand(-1, 16).contiguous())[:, ::4].T  # channel 4g is in group g
        _, phi, _ = plot_kan.edge_functions(gr, [0], range(4), num=N, x_range=(-2.0, 2.0))
        torch.testing.assert_close(phi[0], expected)
    assert isinstance(plot_kan.drawable_layers(nn.Sequential(gr, nn.Linear(2, 2)))[0][0], str)
