"""Training on data.decoder=dali (DALI's CPU-only mode) under mpiexec: real DALI
from PyPI, real JPEGs.

* 1 rank x 4 microbatches = 2 x 2 = 4 x 1, with a corrupt image in the tree
  (counted, the run goes on): the same summary figures and the same bits in
  every checkpoint array (comm.reduction=canonical, as test_invariance.py);
* a truncated pack is one line, exit 2.

The decoder itself, against PIL: tests/unit/test_dali.py.
"""
import glob
import os
import shutil

import pytest

from helpers import (assert_same_bits, assert_same_metrics, jpeg_files, read_summary, state,
                     train)

# `make test` installs the dali extra in the Python 3.11 venv only (CI time);
# elsewhere this file skips, saying so.
dali = pytest.importorskip('nvidia.dali', reason="NVIDIA DALI is not installed in this venv "
                           "(pip install -e '.[dali]'; make test installs it on Python 3.11)")

from pfn15.data import synthetic  # noqa: E402


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('dali') / 'synth')
    synthetic.write_tree(root, classes=3, train=8, val=3, size=96, seed=0)
    return root


QUIET = ['train.progress_bar=false', 'resume=none']


def test_dali_runs_equal_on_1x4_2x2_and_4x1_with_a_corrupt_image_counted(tree, tmp_path):
    root = str(tmp_path / 'data')
    shutil.copytree(tree, root)
    victim = jpeg_files(root)[5]
    with open(victim, 'r+b') as f:
        f.truncate(300)
    common = ['data.dataset=imagenet', 'data.root=' + root, 'data.decoder=dali',
              'data.crop_size=24', 'data.val_resize=28', 'data.loader_workers=1',
              'data.max_bad_fraction=0.5', 'batch.global=16', 'batch.per_worker=4',
              'model.width=4', 'train.iterations=2', 'schedule.boundaries=[2,3,4]'] + QUIET
    runs, states = {}, {}
    for ranks in (1, 2, 4):
        out = str(tmp_path / ('w%d' % ranks))
        r = train(ranks, 'configs/demo.yaml', 'out=' + out, *common, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert '%d workers x 4 per worker x %d microbatch' % (ranks, 4 // ranks) in r.stdout
        runs[ranks] = read_summary(out)
        assert runs[ranks]['config']['data']['decoder'] == 'dali'
        states[ranks] = state(out)
    assert runs[1]['bad_images'] == 1 and victim in runs[1]['bad_files'][0]
    assert runs[1]['val_top1'] is not None and runs[1]['iterations'] == 2
    for n in (2, 4):
        # The same samples, windows and pixels, summed in the canonical order.
        assert_same_bits(states[1], states[n])
        assert_same_metrics(runs[1], runs[n])
        assert runs[n]['bad_images'] == 1 and runs[n]['bad_files'] == runs[1]['bad_files']


def test_a_truncated_pack_is_one_line_exit_2_on_the_dali_decoder(tree, tmp_path):
    import subprocess
    import sys
    from helpers import ROOT, child_env
    pack = str(tmp_path / 'pack')
    r = subprocess.run([sys.executable, '-m', 'pfn15.data', 'pack', tree, pack],
                       capture_output=True, text=True, cwd=ROOT, env=child_env())
    assert r.returncode == 0, r.stderr
    shard = sorted(glob.glob(os.path.join(pack, 'train-*.bin')))[-1]
    with open(shard, 'r+b') as f:
        f.truncate(os.path.getsize(shard) // 2)
    r = train(1, 'configs/demo.yaml', 'out=' + str(tmp_path / 'o'), 'data.dataset=imagenet',
              'data.root=' + pack, 'data.decoder=dali', 'data.crop_size=24',
              'data.val_resize=28', 'batch.global=8', 'batch.per_worker=8', 'model.width=4',
              'train.iterations=1', *QUIET, timeout=120)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith('pfn15: error')]
    assert len(lines) == 1 and shard in lines[0], r.stderr[-2000:]
