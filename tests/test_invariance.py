"""The same run on any number of workers (issue 12), with real pfn15.train under mpiexec.

* 1 rank x 4 microbatches, 2 x 2 and 4 x 1 train the digits demo model (BN)
  to the same parameters and the same validation metrics;
* the same on synthetic JPEGs with random crops and flips, decoded by 2
  MultiprocessIterator workers on one side and in the main process on the other;
* a run checkpointed on 4 ranks and resumed on 2, and on 1, ends where the
  uninterrupted 4-rank run ends (parameters, summary.json, the log).
"""
import glob
import json
import os
import shutil

import numpy
import pytest

from conftest import read_summary, train

DEMO = 'configs/demo.yaml'
QUIET = ['train.progress_bar=false', 'resume=none']
METRICS = ('val_top1', 'val_top5', 'val_loss', 'train_loss', 'train_top1', 'epochs',
           'iterations')


def model_state(out):
    """The model's arrays (parameters and BN statistics) of the newest checkpoint."""
    newest = sorted(glob.glob(os.path.join(out, 'checkpoints', 'iter_*.npz')))[-1]
    with numpy.load(newest, allow_pickle=False) as f:
        return {k: f[k] for k in f.files
                if k.startswith('updater/model:main/') and f[k].dtype.kind == 'f'}


def assert_same_state(a, b, rtol=1e-5):
    """Equal within `rtol` of each array's scale: only the summation order differs."""
    assert a.keys() == b.keys() and len(a) > 20
    moved = 0
    for k in a:
        scale = float(numpy.abs(a[k]).max()) or 1.0
        numpy.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=rtol * scale, err_msg=k)
        moved += 'avg_' in k
    assert moved > 0                      # the BN statistics were compared too


def assert_same_metrics(sa, sb, rel=1e-5):
    for key in METRICS:
        if sa.get(key) is None:
            assert sb.get(key) is None, key
            continue
        assert sb[key] == pytest.approx(sa[key], rel=rel, abs=1e-6), key


def run_ok(n, *overrides, timeout=300):
    r = train(n, DEMO, *overrides, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.mpi
def test_digits_same_parameters_on_1x4_2x2_and_4x1(tmp_path):
    outs = {}
    for ranks in (1, 2, 4):
        outs[ranks] = str(tmp_path / ('w%d' % ranks))
        r = run_ok(ranks, 'out=' + outs[ranks], 'train.iterations=3', *QUIET)
        k = 4 // ranks
        assert '%d workers x 32 per worker x %d microbatch' % (ranks, k) in r.stdout
    states = {n: model_state(o) for n, o in outs.items()}
    summaries = {n: read_summary(o) for n, o in outs.items()}
    for n in (2, 4):
        assert_same_state(states[1], states[n])
        assert_same_metrics(summaries[1], summaries[n])
    assert summaries[1]['microbatches'] == 4 and summaries[4]['microbatches'] == 1
    assert 0.1 < summaries[1]['val_top1'] < 1.0       # trained a little, not a constant


@pytest.mark.mpi
@pytest.mark.slow
def test_jpegs_same_run_with_2_decoding_workers_and_in_process(tmp_path):
    from pfn15.data import synthetic
    root = str(tmp_path / 'synth')
    synthetic.write_tree(root, classes=4, train=10, val=5, size=40, seed=0)
    common = ['data.dataset=imagenet', 'data.root=' + root, 'data.crop_size=24',
              'data.val_resize=28', 'data.min_area=0.3', 'batch.global=16',
              'batch.per_worker=8', 'model.width=4', 'train.iterations=4',
              'schedule.boundaries=[2,3,4]'] + QUIET
    a, b = str(tmp_path / 'one'), str(tmp_path / 'two')
    # 1 rank x 2 microbatches, decoded by 2 MultiprocessIterator workers ...
    run_ok(1, 'out=' + a, 'data.loader_workers=2', *common)
    # ... and 2 ranks x 1 microbatch, decoded in each rank's own process.
    run_ok(2, 'out=' + b, 'data.loader_workers=0', *common)
    assert_same_state(model_state(a), model_state(b))
    assert_same_metrics(read_summary(a), read_summary(b))
    # 40 training images, batch 16, 4 updates: the second epoch's permutation and
    # fresh crops were drawn (1.6 epochs).
    assert read_summary(a)['epochs'] == pytest.approx(1.6)


@pytest.mark.mpi
@pytest.mark.slow
def test_checkpoint_on_4_ranks_resumes_on_2_and_on_1(tmp_path):
    # 3 classes of digits: ~430 training images, 3.4 updates per epoch, so the
    # log has rows from before the checkpoint (iteration 5) and after it.
    common = ['data.classes=3', 'train.iterations=8', 'checkpoint.every=5',
              'checkpoint.keep=5', 'train.progress_bar=false']
    full = str(tmp_path / 'four')
    run_ok(4, 'out=' + full, *common)
    assert os.path.exists(os.path.join(full, 'checkpoints', 'iter_00000005.npz'))
    log_full = json.load(open(os.path.join(full, 'log')))
    assert len(log_full) >= 3 and log_full[0]['iteration'] < 5
    for ranks in (2, 1):
        out = str(tmp_path / ('resumed%d' % ranks))
        os.makedirs(os.path.join(out, 'checkpoints'))
        shutil.copy(os.path.join(full, 'checkpoints', 'iter_00000005.npz'),
                    os.path.join(out, 'checkpoints'))
        r = run_ok(ranks, 'out=' + out, *common)
        assert 'resumed from the checkpoint at iteration 5' in r.stdout
        assert '%d workers x 32 per worker x %d microbatch' % (ranks, 4 // ranks) in r.stdout
        assert_same_state(model_state(full), model_state(out))
        s = read_summary(out)
        assert s['resumed_from_iteration'] == 5 and s['workers'] == ranks
        assert_same_metrics(read_summary(full), s)
        # The log's history survived the move: the same rows, the same numbers.
        log = json.load(open(os.path.join(out, 'log')))
        assert [e['iteration'] for e in log] == [e['iteration'] for e in log_full]
        for e, f in zip(log, log_full):
            for key in ('epoch', 'main/loss', 'main/accuracy', 'validation/main/loss',
                        'validation/main/accuracy', 'lr'):
                assert e[key] == pytest.approx(f[key], rel=1e-5), (e['iteration'], key)
