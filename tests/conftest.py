"""Hooks only; what the tests share is in helpers.py.

A test file's folder says what it needs and marks its tests with that name
(registered in pytest.ini), so `-m "not mpi"` and the like select by kind:
mpi/ holds the files whose tests mostly launch mpiexec (a unit/ file may
still hold one or two such tests beside its in-process ones), jobs/ the job
scripts' tests, kernels/ the GPU kernels' and slurm/ the real SLURM's.
unit/ gets no marker.
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
