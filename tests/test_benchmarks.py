"""The benchmark and report scripts run end to end at tiny sizes on the CPU (their numbers come from GPU runs)."""
import json
import os
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> str:
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_bench_vit_prints_both_tables():
    out = _run('benchmarks/bench_vit.py', '--device', 'cpu', '--models', 'deit_tiny_patch16_224', 'vit_grkan_tiny',
               '--img-size', '32', '--batch-size', '2', '--steps', '1', '--warmup', '0', '--modes', 'eager',
               '--no-macs', '--tokens', '32', '--backends', 'reference', '--patch-size', '8', '--profile')
    rows = [line for line in out.splitlines() if line.startswith('| vit_grkan_tiny | reference | eager |')]
    assert len(rows) == 1 and '| 1.00 |' in out  # the twin's own ratio
    assert '| step ms | host ms | GPU ms |' in out and rows[0].endswith('| — |')  # no GPU time on a CPU
    assert '| 5.57 |' in rows[0]  # params at 32 px, patch 8 (5.68M at its default patch 16)
    assert '| KANLinear (hidden 768) | reference | eager |' in out


def test_bench_vit_interleaved_rounds_print_per_round_ratios():
    out = _run('benchmarks/bench_vit.py', '--device', 'cpu', '--models', 'deit_tiny_patch16_224', 'vit_kan_tiny',
               '--img-size', '32', '--batch-size', '2', '--steps', '1', '--warmup', '1', '--modes', 'eager',
               '--no-macs', '--no-layers', '--backends', 'reference', '--patch-size', '8', '--rounds', '3')
    row = next(line for line in out.splitlines() if line.startswith('| vit_kan_tiny | reference | eager |'))
    ratios = row.split('× per round: ')[1].split()
    assert len(ratios) == 3 and all(float(r) > 0 for r in ratios)
    base = next(line for line in out.splitlines() if line.startswith('| deit_tiny_patch16_224 |'))
    assert '| 1.00 |' in base and 'per round' not in base and '—' not in row.split('|')[6]  # train img/s measured


def test_bench_data_pipeline_rounds_give_per_round_ratios(tmp_path):
    """Two interleaved rounds of synthetic and --data-on-gpu through main.run on the CPU: one row per backend with
    its two per-round ratios, synthetic's all 1.00; without synthetic among the backends: one line, exit 2."""
    base = ['benchmarks/bench_data_pipeline.py', '--device', 'cpu', '--sizes', '32', '--models',
            'deit_tiny_patch16_224', '--images', '96', '--classes', '4', '--batch-size', '16', '--warmup', '1',
            '--steps', '2', '--stage-batches', '0', '--workers', '0', '--root', str(tmp_path)]
    out = _run(*base, '--backends', 'synthetic,resident', '--rounds', '2')
    rows = [line for line in out.splitlines() if line.startswith('| deit_tiny_patch16_224 | 32 px | 1 |')]
    assert len(rows) == 2 and 'x per round |' in out, out[-1500:]
    assert rows[0].endswith('| 1.00 | 1.00 1.00 |') and '--data-on-gpu' in rows[1]
    assert all(float(r) > 0 for r in rows[1].split('|')[-2].split()), rows[1]
    proc = subprocess.run([sys.executable, *base, '--backends', 'resident'], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO), timeout=300)
    assert proc.returncode == 2 and 'must include synthetic' in proc.stderr.splitlines()[-1]


def test_bench_vit_auto_recompute_and_auto_fused_rows_set_the_fasterkan_instances_only():
    """bench_vit's 'auto-recompute' / 'auto-fused' backends: kernel backend 'auto' and compiled_auto_form
    'recompute' / 'fused' on the row's FasterKAN layers (instances: another row and the class keep the default,
    'recompute')."""
    import importlib.util
    import timm
    from vision_kan.layers import FasterKANLinear
    spec = importlib.util.spec_from_file_location('bench_vit', os.path.join(REPO, 'benchmarks', 'bench_vit.py'))
    bench_vit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_vit)
    rows = [bench_vit.set_bench_backend(timm.create_model('vit_fasterkan_tiny', depth=1), name)
            for name in ('auto-recompute', 'auto-fused', 'auto')]
    layers = [[m for m in row.modules() if isinstance(m, FasterKANLinear)] for row in rows]
    assert layers[0] and all(m.kernel_backend == 'auto' and m.compiled_auto_form == 'recompute' for m in layers[0])
    assert layers[1] and all(m.kernel_backend == 'auto' and m.compiled_auto_form == 'fused' for m in layers[1])
    assert all('compiled_auto_form' not in vars(m) for m in layers[2])
    assert FasterKANLinear.compiled_auto_form == 'recompute'


def test_model_table_counts_vits_and_conv_kans():
    out = _run('benchmarks/model_table.py', '--pattern', 'kan_cnn4_twin', '--no-twins')
    assert '| kan_cnn4_twin | 2.07 |' in out
    out = _run('benchmarks/model_table.py', '--pattern', 'reskanet18_kagn', '--no-twins')
    assert '| reskanet18_kagn | 0.95 | 0.29 | 224 px | torch |' in out  # fvcore cannot trace it: the fallback


def test_accuracy_table_reads_run_folders(tmp_path):
    run = tmp_path / 'vit_grkan_tiny'
    run.mkdir()
    (run / 'config.yaml').write_text(yaml.safe_dump(dict(model='vit_grkan_tiny', input_size=32,
                                                          model_kwargs=dict(patch_size=4))))
    rows = [dict(epoch=e, test_acc1=a, test_acc5=90.0 + e, train_img_per_s=s)
            for e, a, s in [(1, 30.0, 100.0), (2, 45.5, 300.0), (3, 44.0, 500.0)]]
    (run / 'log.txt').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    out = _run('benchmarks/accuracy_table.py', str(run))
    # last epoch's top-1/top-5, best top-1, mean img/s after the first epoch
    assert '| vit_grkan_tiny | 3 | 44.00 | 93.00 | 45.50 | 5.36 |' in out and out.rstrip().endswith('| 400 |')


def test_accuracy_table_rejects_a_folder_that_is_not_a_run(tmp_path):
    good = tmp_path / 'run'
    good.mkdir()
    (good / 'config.yaml').write_text(yaml.safe_dump(dict(model='vit_grkan_tiny', input_size=32)))
    (good / 'log.txt').write_text('')  # the run died before its first epoch
    env = dict(os.environ, PYTHONPATH=REPO)
    for folder, words in [(tmp_path / 'missing', 'a main.py run folder has config.yaml'),
                          (good, 'log.txt has no finished epoch')]:
        proc = subprocess.run([sys.executable, 'benchmarks/accuracy_table.py', str(folder)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stdout == '', proc.stderr
        assert proc.stderr.count('\n') == 1 and words in proc.stderr


def test_cifar10_accuracy_script_trains_and_tabulates(tmp_path):
    """benchmarks/cifar10_accuracy.sh (main.py with deit_configs/cifar10_short.yaml) then accuracy_table.py, tiny."""
    sys.path.insert(0, os.path.join(REPO, 'tests'))
    from conftest import make_image_folder
    data = make_image_folder(tmp_path / 'data', size=32)
    env = dict(os.environ, PYTHONPATH=REPO, DATA=str(data), EPOCHS='2', WORKERS='0', RUNS=str(tmp_path / 'runs'),
               MODELS='vit_grkan_tiny', EXTRA='--device cpu --no-amp --batch-size 8 --cpu-threads 1 '
                                              '--model-kwargs patch_size=8 depth=1 embed_dim=32 num_heads=2')
    proc = subprocess.run(['bash', 'benchmarks/cifar10_accuracy.sh'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / 'runs' / 'vit_grkan_tiny'
    cfg = yaml.safe_load((run / 'config.yaml').read_text())
    assert cfg['sched_on_updates'] and cfg['lr'] == 5.0e-4 and cfg['epochs'] == 2 and cfg['input_size'] == 32
    out = _run('benchmarks/accuracy_table.py', str(run), '--num-classes', '3')
    assert out.splitlines()[2].startswith('| vit_grkan_tiny | 2 |')


def test_multi_gpu_check_script_runs_on_cpu_processes(tmp_path):
    """benchmarks/multi_gpu_check.sh (issue 9's run) with 1 and 2 gloo processes on the CPU, tiny: its table says
    the replicas are identical and the 2-process checkpoint resumes in one process."""
    sys.path.insert(0, os.path.join(REPO, 'tests'))
    from conftest import make_image_folder
    data = make_image_folder(tmp_path / 'data', train_per_class=16)
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    env.update(PYTHONPATH=REPO, DATA=str(data), CHECK_DIR=str(tmp_path / 'check'), WORKERS='0',
               EXTRA='--device cpu --no-amp --batch-size 8 --cpu-threads 1 --input-size 16 '
                     '--model-kwargs patch_size=8 depth=2 embed_dim=32 num_heads=2')
    proc = subprocess.run(['bash', 'benchmarks/multi_gpu_check.sh'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'model: identical on every rank' in proc.stdout and 'ema: identical on every rank' in proc.stdout
    assert 'resumed on 1 GPU: epoch 3' in proc.stdout and '| 2 |' in proc.stdout


def test_loader_throughput_prints_a_row_per_worker_count(tmp_path):
    sys.path.insert(0, os.path.join(REPO, 'tests'))
    from conftest import make_image_folder
    data = make_image_folder(tmp_path / 'data', train_per_class=8, size=32)
    out = _run('benchmarks/loader_throughput.py', '--data-path', str(data), '--workers', '0,1', '--batch-size', '4',
               '--batches', '3')
    rows = [line for line in out.splitlines() if line.startswith('| 0 |') or line.startswith('| 1 |')]
    assert len(rows) == 2 and '32 px, batch 4, 24 train images' in out


def test_gpu_busy_merges_overlapping_kernels():
    """bench_data_pipeline.gpu_busy: kernel time summed, busy time as the union of the intervals, span end to end."""
    import importlib.util
    from types import SimpleNamespace
    from torch.autograd import DeviceType
    spec = importlib.util.spec_from_file_location('bench_data_pipeline',
                                                  os.path.join(REPO, 'benchmarks', 'bench_data_pipeline.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def event(start, end, device=DeviceType.CUDA):
        return SimpleNamespace(device_type=device, time_range=SimpleNamespace(start=start, end=end))
    # µs: [0, 1000] and [500, 1500] overlap (busy 1500), a gap, then [3000, 4000]; a CPU event is ignored
    prof = SimpleNamespace(events=lambda: [event(3000, 4000), event(0, 1000), event(500, 1500),
                                           event(0, 9000, DeviceType.CPU)])
    out = module.gpu_busy(prof, steps=2)
    assert out == {'kernel ms': 1.5, 'busy ms': 1.25, 'span ms': 2.0}


def test_dali_probe_says_one_line_without_dali_or_runs_its_cpu_pipeline():
    """benchmarks/dali_probe.py: without NVIDIA DALI (CI) one line and exit 2; with it, the CPU smoke run's table."""
    import importlib.util
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH', '')) if p))
    args = [sys.executable, 'benchmarks/dali_probe.py', '--device', 'cpu', '--images', '16', '--batch-size', '4',
            '--size', '32', '--steps', '1', '--warmup', '1', '--threads', '1']
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    try:
        has_dali = importlib.util.find_spec('nvidia.dali') is not None
    except ModuleNotFoundError:  # no `nvidia` namespace at all
        has_dali = False
    if has_dali:
        assert proc.returncode == 0 and '| training step fed by the DALI pipeline' in proc.stdout, proc.stderr[-2000:]
    else:
        assert proc.returncode == 2 and proc.stdout == ''
        assert proc.stderr.strip().splitlines() == ['dali_probe: NVIDIA DALI is not installed '
                                                    '(pip install nvidia-dali-cuda130)']


def test_issue14_table_script_needs_a_gpu_and_names_its_parts():
    """benchmarks/issue14_table.sh: without CUDA one line and exit 2, whatever the part (CUDA hidden, so a GPU machine
    checks the same); with one it runs bench_vit / kan_compile_check, whose CPU runs are tested above. The python on
    PATH is this one."""
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get('PATH', '')]),
               CUDA_VISIBLE_DEVICES='')
    for part in ('tiny', 'bogus'):
        proc = subprocess.run(['bash', 'benchmarks/issue14_table.sh'], cwd=REPO, env=dict(env, PART=part),
                              capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and 'needs a CUDA GPU' in lines[0], proc.stderr
