"""pfn15.cpu: freed activations are reused, not page-faulted in again.

Counted in minor page faults (deterministic), not in seconds: five 64 MB
arrays allocated and freed in turn fault every page in again under glibc's
defaults, and almost none once keep_freed_memory() is on.
"""
import os
import subprocess
import sys

import pytest

SCRIPT = r'''
import resource, sys
import numpy
from pfn15 import cpu
if sys.argv[1] == 'on':
    assert cpu.keep_freed_memory() is True
    assert cpu.keep_freed_memory() is True   # idempotent
n = 16 * 2 ** 20                                   # 64 MB of float32
a = numpy.ones(n, numpy.float32); del a            # the heap grows once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    a = numpy.ones(n, numpy.float32); del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def _faults(mode):
    # 4 kB pages, so faults count pages (NumPy would otherwise ask for 2 MB huge pages).
    env = dict(os.environ, NUMPY_MADVISE_HUGEPAGE='0')
    out = subprocess.run([sys.executable, '-c', SCRIPT, mode], capture_output=True, text=True,
                         check=True, env=env)
    return int(out.stdout.split()[-1])


def _glibc():
    import platform
    return sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'


@pytest.mark.skipif(not _glibc(), reason='mallopt settings are glibc-specific')
def test_freed_memory_is_reused_not_faulted_in_again():
    pages = 5 * 64 * 2 ** 20 // 4096
    default, kept = _faults('off'), _faults('on')
    assert default > pages // 2, 'glibc default should mmap/munmap 64 MB blocks'
    assert kept < pages // 50, 'with keep_freed_memory the heap pages are reused'


def test_training_config_turns_it_on_for_cpu_only():
    from pfn15 import config
    assert config.load(None, overrides=[], check_paths=False).train.keep_freed_memory is True
    cfg = config.load(None, overrides=['train.keep_freed_memory=false'], check_paths=False)
    assert cfg.train.keep_freed_memory is False


THREADS = r'''
import json, sys
from threadpoolctl import threadpool_info
from pfn15 import cpu
n = cpu.set_threads(int(sys.argv[1]), int(sys.argv[2]))
import numpy  # noqa: F401  (its BLAS is loaded by now either way)
blas = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']
print(json.dumps({'set': n, 'blas': blas, 'in_force': cpu.threads_in_force()}))
'''


def _threads(requested, ranks, **env):
    import json
    e = {k: v for k, v in os.environ.items() if k not in (
        'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')}
    e.update(env)
    out = subprocess.run([sys.executable, '-c', THREADS, str(requested), str(ranks)],
                         capture_output=True, text=True, check=True, env=e)
    return json.loads(out.stdout.splitlines()[-1])


def test_blas_threads_shared_out_over_the_ranks_of_a_node():
    cores = os.cpu_count()
    r = _threads(0, 1)                       # one rank: every core
    assert r['set'] == cores and r['blas'] and set(r['blas']) == {cores}
    r = _threads(0, cores + 1)               # more ranks than cores: one thread each
    assert r['set'] == 1 and set(r['blas']) == {1} and r['in_force'] == 1
    r = _threads(3, 1)                       # the config's explicit count wins
    assert r['set'] == 3 and set(r['blas']) == {3}
    r = _threads(0, 1, OMP_NUM_THREADS='1')  # so does the user's environment
    assert r['set'] == 1 and set(r['blas']) == {1}
