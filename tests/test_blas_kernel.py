"""pfn15.blas_kernel: OpenBLAS's kernel chosen before NumPy loads, read back through
threadpoolctl in fresh interpreters on the machine the tests run on (no timings)."""
import json
import os
import subprocess
import sys

import pytest

from pfn15 import blas_kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEST = blas_kernel.best_coretype(blas_kernel.cpu_flags())

PROBE = r'''
import json, os, sys
pre = sys.argv[1]
if pre == 'numpy-first-haswell':     # NumPy loaded with the weaker kernel, then unset
    import numpy
    del os.environ['OPENBLAS_CORETYPE']
import pfn15
from pfn15 import blas_kernel
print(json.dumps({'report': blas_kernel.report(), 'decision': blas_kernel.decision(),
                  'warning': blas_kernel.check(warn=False)}))
'''


def _probe(pre='plain', **env_over):
    env = dict(os.environ)
    for k in (blas_kernel.VAR, blas_kernel.MARK):
        env.pop(k, None)
    env.update(env_over)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    out = subprocess.run([sys.executable, '-c', PROBE, pre], env=env, check=True,
                         stdout=subprocess.PIPE, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def _openblas_or_skip(r):
    if r['report']['architecture'] is None:
        pytest.skip("NumPy here does not use OpenBLAS (threadpoolctl finds none)")


def test_flag_rules():
    avx512 = set(blas_kernel.AVX512) | {'avx2', 'fma'}
    assert blas_kernel.best_coretype(avx512) == 'SkylakeX'
    assert blas_kernel.best_coretype(avx512 | {'avx512_bf16'}) == 'Cooperlake'
    assert blas_kernel.best_coretype(avx512 | {'amx_tile'}) is None      # OpenBLAS knows SPR
    assert blas_kernel.best_coretype({'avx2', 'fma'}) is None
    assert blas_kernel.best_coretype(set()) is None


def test_choose_respects_the_user_and_marks_its_own_choice():
    avx512 = set(blas_kernel.AVX512)
    env = {}
    assert blas_kernel.choose(env, avx512, numpy_loaded=False)[0] == 'SkylakeX'
    assert env == {blas_kernel.VAR: 'SkylakeX', blas_kernel.MARK: 'SkylakeX'}
    # A child process sees pfn15's mark and does not take it for the user's.
    assert 'parent' in blas_kernel.choose(dict(env), set(), numpy_loaded=False)[1]
    user = {blas_kernel.VAR: 'Haswell'}
    assert blas_kernel.choose(user, avx512, numpy_loaded=False) == \
        ('Haswell', 'set by the user (OPENBLAS_CORETYPE=Haswell)')
    assert user == {blas_kernel.VAR: 'Haswell'}
    late = {}   # NumPy already loaded: too late to set anything
    assert blas_kernel.choose(late, avx512, numpy_loaded=True)[0] is None and late == {}


def test_the_kernel_that_runs_here():
    r = _probe()
    _openblas_or_skip(r)
    arch = r['report']['architecture']
    print('CPU supports %s; OpenBLAS %s runs %s (%s)' % (
        BEST, r['report']['version'], arch, r['decision'][1]))
    if BEST is None:
        assert r['decision'][0] is None        # left to OpenBLAS's own detection
    else:
        assert r['decision'] == [BEST, 'chosen by pfn15 from the CPU flags (AVX-512)']
        assert arch.lower() in blas_kernel.AVX512_KERNELS
        assert r['report']['weaker'] is False and r['warning'] is None


def test_the_users_coretype_wins():
    r = _probe(OPENBLAS_CORETYPE='Haswell')
    _openblas_or_skip(r)
    assert r['report']['architecture'] == 'Haswell'
    assert r['decision'][1] == 'set by the user (OPENBLAS_CORETYPE=Haswell)'
    assert r['warning'] is None        # the user chose it: no nagging


def test_numpy_loaded_first_with_a_weaker_kernel_says_what_to_export():
    if BEST is None:
        pytest.skip('this CPU has no AVX-512 rule: no weaker kernel to detect')
    r = _probe('numpy-first-haswell', OPENBLAS_CORETYPE='Haswell')
    _openblas_or_skip(r)
    assert r['report']['architecture'] == 'Haswell' and r['report']['weaker']
    assert r['decision'][0] is None
    assert 'export OPENBLAS_CORETYPE=%s' % BEST in r['warning']


CHILDREN = r'''
import json, multiprocessing, sys
import pfn15


def arch(_):
    from pfn15 import blas_kernel
    return blas_kernel.report()['architecture'], blas_kernel.decision()[1]


if __name__ == '__main__':
    ctx = multiprocessing.get_context('forkserver')
    with ctx.Pool(1) as pool:
        child = pool.map(arch, [0])[0]
    from mpi4py import MPI
    print(json.dumps({'rank': MPI.COMM_WORLD.rank, 'self': arch(0), 'forkserver': child}))
'''


def test_mpi_ranks_and_forkserver_children_run_the_same_kernel(tmp_path):
    from conftest import mpirun
    script = tmp_path / 'children.py'
    script.write_text(CHILDREN)
    env = {k: v for k, v in os.environ.items() if k not in (blas_kernel.VAR, blas_kernel.MARK)}
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    r = mpirun(2, [str(script)], timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith('{')]
    assert sorted(row['rank'] for row in rows) == [0, 1]
    for row in rows:
        assert row['self'][0] == row['forkserver'][0], row
        if BEST is not None and row['self'][0] is not None:
            assert row['self'][0].lower() in blas_kernel.AVX512_KERNELS
            assert 'parent' in row['forkserver'][1]   # inherited pfn15's choice, not the user's
