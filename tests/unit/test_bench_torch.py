"""pfn15.bench_torch: the PyTorch ResNet-50 peer of `python -m pfn15.bench step`.

PyTorch is not a dependency of pfn15: the first test runs everywhere (torch
blocked in a subprocess the way Python blocks an import, sys.modules[name] =
None); the others need torch (pytest.importorskip) and run the real loop on the
CPU at a tiny size, or on a GPU when torch sees one. The peer interleaved in
`python -m pfn15.bench step`, which starts MPI: tests/mpi/test_bench_torch_step.py.
"""
import json
import math
import os
import subprocess
import sys

import pytest

from helpers import ROOT

TINY = dict(batch=2, size=32, device='cpu', iters=1, blocks=2, warmup=3, classes=10)


def test_without_torch_it_skips_and_says_why(tmp_path):
    out = tmp_path / 'peer.json'
    script = '''
import json, sys
import pfn15.bench_torch as bt
assert 'torch' not in sys.modules, 'importing pfn15.bench_torch imported torch'
sys.modules['torch'] = None          # what Python does for a blocked import
sys.modules['torchvision'] = None
r = bt.run_peer(batch=2, size=32, device='cpu', iters=1, blocks=2, warmup=1, classes=10)
bt.print_peer(r)
rc = bt.main(['--batch', '2', '--size', '32', '--iters', '1', '--blocks', '1',
              '--json', sys.argv[1]])
print(json.dumps({'available': bt.available(), 'peer': r, 'rc': rc}))
'''
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    p = subprocess.run([sys.executable, '-c', script, str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.strip().splitlines()
    got = json.loads(lines[-1])
    ok, why = got['available']
    assert ok is False and 'torch is not importable' in why
    r = got['peer']
    assert r['status'] == 'skipped'
    assert 'torch is not importable' in r['reason']
    assert r['torch_img_per_s'] is None and r['device'] == 'cpu'
    assert lines[0].startswith('PyTorch peer: skipped (torch is not importable')
    assert got['rc'] == 0
    assert json.loads(out.read_text())['status'] == 'skipped'


def test_fallback_resnet50_is_the_standard_one():
    torch = pytest.importorskip('torch')
    from pfn15 import bench_torch
    model = bench_torch.resnet50_fallback(1000)
    assert sum(p.numel() for p in model.parameters()) == 25557032
    tv, _ = bench_torch._torchvision()
    if tv is not None:   # same layout as torchvision's, name for name
        ref = tv.models.resnet50(weights=None)
        assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == \
            [(k, tuple(v.shape)) for k, v in ref.state_dict().items()]
    small = bench_torch.resnet50_fallback(10, in_channels=1).eval()
    with torch.no_grad():
        assert small(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def _check_ok(r, **want):
    assert r['status'] == 'ok', r.get('reason')
    rate = r['torch_img_per_s']
    assert rate > 0 and math.isfinite(rate)
    assert len(r['torch_blocks_img_per_s']) == r['blocks']
    assert all(v > 0 and math.isfinite(v) for v in r['torch_blocks_img_per_s'])
    assert r['peak_memory_mb'] > 0 and r['peak_memory_what']
    assert len(r['torch_losses']) == r['warmup'] + r['blocks'] * r['iters']
    assert all(math.isfinite(v) for v in r['torch_losses'])
    for k, v in want.items():
        assert r[k] == v, (k, r[k], v)


def test_cpu_peer_runs_and_trains():
    pytest.importorskip('torch')
    from pfn15 import bench_torch
    r = bench_torch.run_peer(lr=0.01, **TINY)
    _check_ok(r, device='cpu', amp=False, amp_dtype=None, channels_last=True, classes=10)
    losses = r['torch_losses']
    assert losses[-1] < losses[0] and min(losses[1:]) < losses[0], losses
    assert r['param_count'] == 25557032 - 2049 * 1000 + 2049 * 10   # fc: 2048 x classes + bias


def test_cpu_bfloat16_and_fallback_without_torchvision(monkeypatch):
    pytest.importorskip('torch')
    from pfn15 import bench_torch
    monkeypatch.setitem(sys.modules, 'torchvision', None)
    r = bench_torch.run_peer(amp=True, channels_last=False, **dict(TINY, blocks=1, warmup=1))
    _check_ok(r, amp=True, amp_dtype='bfloat16', channels_last=False)
    assert r['model_source'].startswith('pfn15.bench_torch.resnet50_fallback')


def test_gpu_id_without_cuda_is_skipped():
    torch = pytest.importorskip('torch')
    if torch.cuda.is_available():
        pytest.skip('torch sees a CUDA device')
    from pfn15 import bench_torch
    r = bench_torch.run_peer(**dict(TINY, device=0))
    assert r['status'] == 'skipped' and 'CUDA' in r['reason']
    assert r['torch_img_per_s'] is None


def test_gpu_peer_float16_amp():
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('torch sees no CUDA device')
    from pfn15 import bench_torch
    r = bench_torch.run_peer(**dict(TINY, device=0, lr=0.01))
    _check_ok(r, device='cuda:0', amp=True, amp_dtype='float16', channels_last=True)
    assert 'max_memory_allocated' in r['peak_memory_what']
