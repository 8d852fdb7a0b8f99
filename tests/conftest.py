"""Hooks only; what the tests share is in helpers.py.

A test file's folder says what it needs and marks its tests with that name
(registered in pytest.ini), so `-m "not mpi"` and the like select by kind:
mpi/ holds every test that starts an MPI process (mpiexec, pfn15.train even
on one rank, a rank program, a tool on a ChainerMN communicator), jobs/ the
job scripts' tests, kernels/ the GPU kernels' and slurm/ the real SLURM's.
unit/ gets no marker and starts no MPI process; a topic with both kinds of
test has a file in each (unit/test_dali.py, mpi/test_dali_runs.py).
"""
import os

import pytest

KINDS = ('mpi', 'jobs', 'kernels', 'slurm')
HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = os.path.relpath(str(item.path), HERE).split(os.sep, 1)[0]
        if folder in KINDS:
            item.add_marker(getattr(pytest.mark, folder))
