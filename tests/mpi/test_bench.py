"""pfn15.bench: the all-reduce benchmark under real MPI (mpiexec -n 2) feeding
pfn15.plan --calibrate, and a smoke test of the step benchmark (one process on
a ChainerMN communicator, so MPI is initialized too). How the data benchmark's
figures print: tests/unit/test_bench_figures.py.

The step test needs pfn15.train.build_trainer; without it the test fails
(it does not skip): the benchmark's (b) is the product's own trainer.
"""
import json
import subprocess
import sys

import pytest

from helpers import ROOT, child_env, mpiexec_path


def test_allreduce_under_mpiexec_and_calibrate(tmp_path):
    mpiexec = mpiexec_path()
    assert mpiexec, 'mpiexec not found next to %s or on PATH' % sys.executable
    out = tmp_path / 'ar.json'
    p = subprocess.run(
        [mpiexec, '-n', '2', sys.executable, '-m', 'pfn15.bench', 'allreduce',
         '--bytes', '4096,1048576,8388608', '--repeat', '7', '--json', str(out)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'ChainerMN' in p.stdout and 'alpha' in p.stdout
    d = json.loads(out.read_text())
    for key in ('kind', 'comm', 'workers', 'rows', 'alpha_s', 'beta_s_per_byte',
                'baseline_alpha_s', 'baseline_beta_s_per_byte', 'ratio'):
        assert key in d, key
    assert d['kind'] == 'allreduce' and d['comm'] == 'naive' and d['workers'] == 2
    assert [r['bytes'] for r in d['rows']] == [4096, 1048576, 8388608]
    assert all(r['ours_s'] > 0 and r['baseline_s'] > 0 for r in d['rows'])
    assert d['alpha_s'] > 0 and d['beta_s_per_byte'] > 0
    assert d['ratio'] > 0

    # the planner takes it
    from pfn15 import plan
    s = plan.calibrate(plan.presets()['pfn'], [str(out)])
    assert s.inter_alpha == pytest.approx(d['alpha_s'])
    assert s.calls_per_array
    r = plan.plan_one(s, 2)
    assert r['allreduce_s'] > 0


def test_step_smoke(tmp_path):
    out = tmp_path / 'step.json'
    p = subprocess.run(
        [sys.executable, '-m', 'pfn15.bench', 'step', '--arch', 'resnet_small', '--size', '32',
         '--batch', '8', '--iters', '3', '--blocks', '2', '--warmup', '1', '--json', str(out)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'ratio b/a' in p.stdout
    d = json.loads(out.read_text())
    assert d['kind'] == 'step' and d['batch'] == 8 and d['size'] == 32
    assert d['bare_img_per_s'] > 0 and d['pfn15_img_per_s'] > 0
    assert d['ratio'] == pytest.approx(d['pfn15_img_per_s'] / d['bare_img_per_s'])
    assert d['peak_memory_mb'] > 0 and d['param_arrays'] > 0 and d['param_count'] > 0
    # Which CPU functions and which OpenBLAS kernel ran (pfn15/functions, blas_kernel).
    assert d['cpu_functions'] == 'onednn' and 'CPU functions of (a) and (b)' in p.stdout
    assert set(d['blas']) >= {'architecture', 'version', 'coretype', 'why', 'weaker', 'problem'}
    assert 'OpenBLAS' in p.stdout
    # A kernel weaker than the CPU's best is reported with its fix (blas_kernel.problem).
    assert bool(d['blas']['problem']) == ('  problem: ' in p.stdout) == d['blas']['weaker']


def test_step_on_several_ranks_is_one_line_exit_2():
    mpiexec = mpiexec_path()
    assert mpiexec, 'mpiexec not found next to %s or on PATH' % sys.executable
    p = subprocess.run(
        [mpiexec, '-n', '2', sys.executable, '-m', 'pfn15.bench', 'step', '--arch',
         'resnet_small', '--batch', '8', '--size', '32', '--peer', 'none'],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and 'times one process (2 ranks' in lines[0], p.stderr
    assert 'Traceback' not in p.stdout + p.stderr
