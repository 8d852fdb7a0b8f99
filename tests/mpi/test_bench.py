"""pfn15.bench: the all-reduce benchmark under real MPI (mpiexec -n 2) feeding
pfn15.plan --calibrate, and a smoke test of the step benchmark (one process on
a ChainerMN communicator, so MPI is initialized too), the step benchmark on
two ranks, and `bench ranks` comparing one rank with two. How the data benchmark's
figures print: tests/unit/test_bench_figures.py.

The step test needs pfn15.train.build_trainer; without it the test fails
(it does not skip): the benchmark's (b) is the product's own trainer.
"""
import json
import statistics
import subprocess
import sys

import pytest

from helpers import ROOT, assert_one_line, child_env, mpiexec_path, mpirun


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


def test_step_on_two_ranks_times_the_whole_job(tmp_path):
    mpiexec = mpiexec_path()
    assert mpiexec, 'mpiexec not found next to %s or on PATH' % sys.executable
    out = tmp_path / 'step2.json'
    p = subprocess.run(
        [mpiexec, '-n', '2', sys.executable, '-m', 'pfn15.bench', 'step', '--arch',
         'resnet_small', '--size', '16', '--batch', '8', '--iters', '2', '--blocks', '2',
         '--warmup', '1', '--peer', 'none', '--json', str(out)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count('bench step:') == 1, p.stdout   # rank 0 alone prints
    d = json.loads(out.read_text())
    assert d['ranks'] == 2 and d['global_batch'] == 16 and d['threads_per_worker'] == 1
    assert d['job_img_per_s'] > 0
    assert d['job_img_per_s'] == pytest.approx(2 * d['per_rank_img_per_s'])
    assert d['job_img_per_s'] == pytest.approx(statistics.median(
        [2 * 8 * 2 / s for s in d['block_s']]))
    assert 'bare_img_per_s' not in d and 'torch_peer' not in d   # one-process baselines


def test_ranks_compares_one_rank_with_two_at_the_same_global_batch(tmp_path):
    out = tmp_path / 'ranks.json'
    p = subprocess.run(
        [sys.executable, '-m', 'pfn15.bench', 'ranks', '--ranks', '2', '--arch',
         'resnet_small', '--size', '16', '--batch', '8', '--iters', '2', '--blocks', '2',
         '--warmup', '1', '--json', str(out)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'ratio 2 ranks x 1 thread / 1 rank x 2 threads' in p.stdout
    d = json.loads(out.read_text())
    assert d['one_rank_img_per_s'] > 0 and d['ranks_img_per_s'] > 0
    assert d['ratio'] == pytest.approx(d['ranks_img_per_s'] / d['one_rank_img_per_s'])
    one, many = d['one_rank'], d['several_ranks']
    assert (one['ranks'], one['batch'], one['threads_per_worker']) == (1, 16, 2)
    assert (many['ranks'], many['batch'], many['threads_per_worker']) == (2, 8, 1)


def test_ranks_names_the_run_that_failed():
    p = subprocess.run(
        [sys.executable, '-m', 'pfn15.bench', 'ranks', '--ranks', '2', '--arch',
         'resnet_small', '--size', '16', '--batch', '8', '--set', 'no.such_key=1'],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert_one_line(p, 1, 'ranks: the 1 rank x 2 threads run failed', prog='pfn15.bench')


def test_peer_torch_on_several_ranks_is_one_line_exit_2():
    p = mpirun(2, ['-m', 'pfn15.bench', 'step', '--arch', 'resnet_small', '--batch', '8',
                   '--size', '16', '--peer', 'torch'], timeout=120)
    assert_one_line(p, 2, '--peer torch', 'without mpiexec (2 ranks',
                    prog='pfn15.bench')
