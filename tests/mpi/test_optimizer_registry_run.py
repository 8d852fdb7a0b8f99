"""The optimizer registry: an optimizer is one class and one entry.

tests/mpi/programs/registry_dummy.py adds `dummy_sgd` (three state arrays, a
scheduled `gamma`, one CUDA kernel) in a fresh process, trains with it there
(pfn15.train on one rank) and reports what every reader of the registry made
of it. The registry's own entries: tests/unit/test_optimizer_registry.py.
"""
import json
import subprocess
import sys

import pytest

from helpers import ROOT, child_env, mpi_script


def test_a_new_optimizer_is_one_class_and_one_entry(tmp_path):
    dummy = mpi_script('registry_dummy.py')
    proc = subprocess.run([sys.executable, dummy, str(tmp_path)], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    lines = [l for l in proc.stdout.splitlines() if l.startswith('REPORT ')]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads(lines[0][len('REPORT '):])
    # config: a choice, with its own section and bounds
    assert r['config_gamma0'] == 0.5
    assert 'optimizer.dummy_sgd.gamma0: must be >= 0.0' in r['config_error']
    # built: w - lr x gamma0 x g, and three state arrays on each parameter
    assert r['built'] == 'DummySGD'
    assert r['w_after'] == pytest.approx(1.0 - 0.2 * 0.5 * 1.0)
    assert r['states'] == [3, 3]
    # estimated: three state arrays, two more than momentum SGD's one
    assert r['estimate_minus_momentum_sgd'] == 2 * r['param_bytes']
    # listed for compiling: NVRTC (both dtypes), the host tests, gpu_check, bench
    assert {'pfn15_dummy_sgd/float32', 'pfn15_dummy_sgd/float16'} <= set(r['nvrtc_ids'])
    assert 'dummy_sgd' in r['host_cases']
    assert 'pfn15_dummy_sgd' in r['host_comparison_missing']   # a new kernel needs its test
    assert r['host_kernel'] == pytest.approx([1.0 - 0.1 * 0.5 * 2.0, 2.0, 4.0, 0.1])
    assert 'dummy_sgd' in r['gpu_checks'] and r['bench_choice'] == 'dummy_sgd'
    # trained: the schedule drives gamma every iteration; the log and the table show it
    assert r['train_status'] in (0, None)
    log = r['log']
    assert [row['gamma'] is not None for row in log] == [True] * len(log)
    for row in log:   # the value of the epoch's last iteration, just before row['epoch']
        assert 0.5 / (1 + row['epoch']) <= row['gamma'] <= 0.5 / row['epoch'] + 1e-12
        assert row['alpha_sgd'] is None
    assert 'gamma' in proc.stdout.split('epoch', 1)[1].splitlines()[0]
