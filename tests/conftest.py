"""Shared helpers: launch real MPI jobs (mpiexec from the venv's PyPI mpich or the PATH)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def mpiexec_path():
    here = os.path.join(BIN, 'mpiexec')
    return here if os.path.exists(here) else shutil.which('mpiexec')


def child_env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1',
               PYTHONUNBUFFERED='1', PATH=BIN + os.pathsep + env.get('PATH', ''))
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    return env


def mpirun(n, args, timeout=300, **kw):
    """Run `python ARGS...` on n real MPI ranks; returns CompletedProcess (text)."""
    exe = mpiexec_path()
    if exe is None:
        pytest.fail('mpiexec not found: install the mpich extra (pip install -e .[mpich])')
    cmd = [exe, '-n', str(n), sys.executable] + list(args)
    return subprocess.run(cmd, cwd=kw.pop('cwd', ROOT), env=kw.pop("env", child_env()),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, **kw)


def train(n, config, *overrides, timeout=600):
    return mpirun(n, ['-m', 'pfn15.train', config] + list(overrides), timeout=timeout)


def read_summary(out):
    with open(os.path.join(out, 'summary.json')) as f:
        return json.load(f)


def mpi_script(name):
    return os.path.join(ROOT, 'tests', 'mpi', name)
