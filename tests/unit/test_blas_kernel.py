"""pfn15.blas_kernel: OpenBLAS's kernel chosen before NumPy loads, read back through
threadpoolctl in fresh interpreters on the machine the tests run on (no timings).
The kernel MPI ranks and their forkserver children run:
tests/mpi/test_blas_kernel_on_ranks.py."""
import json
import os
import subprocess
import sys

import pytest

from pfn15 import blas_kernel

from helpers import ROOT
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


# /proc/cpuinfo flags of real CPUs (the parts that matter), and the core type each gets.
SKYLAKE_SP = set(blas_kernel.AVX512) | {'pni', 'ssse3', 'sse4_2', 'avx', 'avx2', 'fma'}
SAPPHIRE_RAPIDS = SKYLAKE_SP | {'avx512_bf16', 'avx512_fp16', 'avx512_vnni', 'amx_tile',
                                'amx_bf16', 'amx_int8'}
ZEN4 = SKYLAKE_SP | {'avx512_bf16', 'avx512_vnni', 'avx512ifma', 'sse4a'}
HASWELL = {'pni', 'ssse3', 'sse4_2', 'avx', 'avx2', 'fma'}
KNIGHTS_LANDING = HASWELL | {'avx512f', 'avx512cd', 'avx512er', 'avx512pf'}   # no BW/DQ/VL
SANDY_BRIDGE = {'pni', 'ssse3', 'sse4_2', 'avx'}
OLD = {'pni', 'ssse3'}


@pytest.mark.parametrize('flags, level, coretype', [
    (SAPPHIRE_RAPIDS, 'AVX-512', 'SkylakeX'),     # AMX: not left to OpenBLAS's model table
    (SKYLAKE_SP, 'AVX-512', 'SkylakeX'),
    (ZEN4, 'AVX-512', 'SkylakeX'),
    (KNIGHTS_LANDING, 'AVX2', 'Haswell'),
    (HASWELL, 'AVX2', 'Haswell'),
    (SANDY_BRIDGE, 'AVX', 'Sandybridge'),
    (OLD, 'SSE3', 'Prescott'),
])
def test_flag_rules(flags, level, coretype):
    assert blas_kernel.best_level(flags) == (level, coretype)
    assert blas_kernel.best_coretype(flags) == coretype
    # A CPU with a better instruction set than the kernel that runs is a problem ...
    assert blas_kernel.weaker('Prescott', flags) == (
        None if level == 'SSE3' else ('SSE3', level, coretype))
    # ... the kernel chosen for it is not, nor one of the same level.
    assert blas_kernel.weaker(coretype, flags) is None
    if level == 'AVX-512':
        for same in ('Cooperlake', 'SapphireRapids', 'SKYLAKEX'):
            assert blas_kernel.weaker(same, flags) is None
        assert blas_kernel.weaker('Haswell', flags) == ('AVX2', 'AVX-512', 'SkylakeX')
        assert blas_kernel.weaker('Zen', flags) == ('AVX2', 'AVX-512', 'SkylakeX')


def test_no_flags_no_choice():
    assert blas_kernel.best_level(set()) is None    # not x86 (or no /proc/cpuinfo)
    assert blas_kernel.choose({}, set(), numpy_loaded=False)[0] is None
    assert blas_kernel.weaker('Prescott', set()) is None
    assert blas_kernel.weaker('ARMV8', SKYLAKE_SP) is None      # not a kernel we rank


def test_problem_line_names_the_fix():
    info = {'architecture': 'Prescott', 'version': '0.3.23.dev'}
    user = blas_kernel.problem(info, SAPPHIRE_RAPIDS, {blas_kernel.VAR: 'Prescott'}, False)
    assert 'runs its Prescott kernels (SSE3) on a CPU with AVX-512' in user
    assert 'OPENBLAS_CORETYPE=Prescott is set in the environment; export ' \
           'OPENBLAS_CORETYPE=SkylakeX' in user
    late = blas_kernel.problem(info, SAPPHIRE_RAPIDS, {}, True)
    assert 'import pfn15 first, or start Python with OPENBLAS_CORETYPE=SkylakeX' in late
    mine = {blas_kernel.VAR: 'SkylakeX', blas_kernel.MARK: 'SkylakeX'}
    assert 'has no SkylakeX kernels' in blas_kernel.problem(info, ZEN4, mine, False)
    ok = {'architecture': 'SkylakeX', 'version': '0.3.23.dev'}
    assert blas_kernel.problem(ok, SAPPHIRE_RAPIDS, {}, False) is None
    assert blas_kernel.problem({'architecture': 'Haswell'}, HASWELL, {}, False) is None


def test_choose_respects_the_user_and_marks_its_own_choice():
    avx512 = SKYLAKE_SP
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
        level = blas_kernel.best_level(blas_kernel.cpu_flags())[0]
        assert r['decision'] == [BEST, 'chosen by pfn15 from the CPU flags (%s)' % level]
        # The kernel that runs is one for the CPU's best instruction set.
        assert blas_kernel.KERNEL_LEVEL[arch.lower()] == level
        assert r['report']['weaker'] is False and r['warning'] is None
        assert r['report']['problem'] is None


def test_the_users_coretype_wins():
    r = _probe(OPENBLAS_CORETYPE='Haswell')
    _openblas_or_skip(r)
    assert r['report']['architecture'] == 'Haswell'
    assert r['decision'][1] == 'set by the user (OPENBLAS_CORETYPE=Haswell)'
    assert r['warning'] is None        # the user chose it: no nagging at train start ...
    if BEST not in (None, 'Haswell'):  # ... but pfn15.env names it, with the fix
        assert 'export OPENBLAS_CORETYPE=%s' % BEST in r['report']['problem']


def test_numpy_loaded_first_with_a_weaker_kernel_says_what_to_export():
    if BEST in (None, 'Haswell', 'Sandybridge', 'Nehalem', 'Prescott'):
        pytest.skip('this CPU has no instruction set above AVX2: Haswell is not weaker')
    r = _probe('numpy-first-haswell', OPENBLAS_CORETYPE='Haswell')
    _openblas_or_skip(r)
    assert r['report']['architecture'] == 'Haswell' and r['report']['weaker']
    assert r['decision'][0] is None
    assert 'import pfn15 first, or start Python with OPENBLAS_CORETYPE=%s exported' % BEST \
        in r['warning']


def test_env_names_a_users_weaker_kernel_as_a_warning():
    if BEST in (None, 'Prescott'):
        pytest.skip('no instruction set above SSE3 here: no weaker kernel to force')
    env = {k: v for k, v in os.environ.items() if k not in (blas_kernel.VAR, blas_kernel.MARK)}
    env.update(OPENBLAS_CORETYPE='Prescott',
               PYTHONPATH=ROOT + os.pathsep + env.get('PYTHONPATH', ''))
    r = subprocess.run([sys.executable, '-m', 'pfn15.env'], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    if 'openblas' not in r.stdout:
        pytest.skip('NumPy here does not use OpenBLAS')
    # The user's own setting: named with the fix, as a warning (it does not stop a run).
    lines = [line for line in r.stderr.splitlines() if line.startswith('pfn15.env: warning:')]
    assert len(lines) == 1, r.stderr
    assert 'pfn15.env: problem:' not in r.stderr, r.stderr
    assert 'OPENBLAS_CORETYPE=Prescott is set in the environment; export ' \
           'OPENBLAS_CORETYPE=%s instead' % BEST in lines[0]
