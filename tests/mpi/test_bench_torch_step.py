"""pfn15.bench_torch, the PyTorch ResNet-50 peer, interleaved in `python -m
pfn15.bench step --peer torch` (one process on a ChainerMN communicator, so MPI
is initialized). Needs torch (pytest.importorskip); PyTorch is not a dependency
of pfn15. The peer alone: tests/unit/test_bench_torch.py.
"""
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT


def test_bench_step_on_cpu_interleaves_the_peer(tmp_path):
    pytest.importorskip('torch')
    out = tmp_path / 'step.json'
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    p = subprocess.run(
        [sys.executable, '-m', 'pfn15.bench', 'step', '--arch', 'resnet50', '--size', '32',
         '--batch', '2', '--iters', '1', '--blocks', '2', '--warmup', '1', '--peer', 'torch',
         '--json', str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    d = json.loads(out.read_text())
    peer = d['torch_peer']
    assert peer['status'] == 'ok' and peer['interleaved'] is True
    assert len(peer['torch_blocks_img_per_s']) == len(d['bare_blocks_img_per_s']) == 2
    assert d['ratio_vs_torch'] == pytest.approx(d['pfn15_img_per_s'] / d['torch_img_per_s'])
    assert 'interleaved with (a) and (b)' in p.stdout and 'pfn15/peer' in p.stdout
