"""Every ```python block of README.md runs as written: each on its own (a fresh namespace, as a reader pastes it),
on the CPU, from the checkout's root, in one subprocess with Triton's interpreter on (TRITON_INTERPRET=1, which
the fused-kernel block names as its CPU condition)."""
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

REPO = Path(__file__).resolve().parents[1]

_RUNNER = r"""
import sys, traceback
blocks = eval(sys.stdin.read())
for line, source in blocks:
    try:
        exec(compile(source, f'README.md, block at line {line}', 'exec'), {'__name__': '__readme__'})
    except BaseException:
        print(f'README block at line {line} failed:', file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print(f'block at line {line}: ok', flush=True)
"""


def python_blocks(text: str) -> List[Tuple[int, str]]:
    """(line of the opening fence, code) of every ```python block."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if re.fullmatch(r'```python\s*', lines[i]):
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith('```'):
                body.append(lines[i])
                i += 1
            blocks.append((start, '\n'.join(body) + '\n'))
        i += 1
    return blocks


def test_python_blocks_are_found():
    text = 'a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\nz = 3\n```\n'
    assert python_blocks(text) == [(2, 'x = 1\n'), (8, 'y = 2\nz = 3\n')]


def test_every_readme_python_block_runs(tmp_path):
    blocks = python_blocks((REPO / 'README.md').read_text())
    assert len(blocks) >= 5
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES='',
               TORCH_HOME=str(tmp_path / 'torch_home'))  # torch.hub writes nothing into the user's cache
    proc = subprocess.run([sys.executable, '-c', _RUNNER], input=repr(blocks), capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count(': ok') == len(blocks), proc.stdout
