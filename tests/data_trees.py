"""Fixtures of real image trees shared by a unit file and its mpi/ twin: a packed
source and its pack (tests/unit/test_packed.py, tests/mpi/test_packed_runs.py),
and ILSVRC2012 as downloaded with a Kaggle label file (tests/unit/test_val_labels.py,
tests/mpi/test_val_labels_runs.py). A test file imports the ones it uses by name."""
import os
import shutil

import pytest

from helpers import ilsvrc_tree, pack_source, write_kaggle, write_pack


@pytest.fixture(scope='module')
def src(tmp_path_factory):
    return pack_source(str(tmp_path_factory.mktemp('src')))


@pytest.fixture(scope='module')
def pack(src, tmp_path_factory):
    return write_pack(src, str(tmp_path_factory.mktemp('packs') / 'pack'))


@pytest.fixture
def copy(pack, tmp_path):
    out = str(tmp_path / 'pack')
    shutil.copytree(pack, out)
    return out


@pytest.fixture(scope='module')
def clean(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('ilsvrc'))
    labels = ilsvrc_tree(root)
    write_kaggle(os.path.join(root, 'LOC_val_solution.csv'), labels)
    return root, labels


@pytest.fixture
def tree(clean, tmp_path):
    root = str(tmp_path / 'data')
    shutil.copytree(clean[0], root)
    return root, clean[1]
