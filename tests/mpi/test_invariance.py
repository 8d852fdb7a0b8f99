"""The same run on any number of workers, bit for bit, with real
pfn15.train under mpiexec and comm.reduction=canonical (the default):

* the digits demo model (RMSprop warm-up, BN without moving averages), 24
  updates: parameters, optimizer state, BN statistics, the summary and the
  log's losses bit-identical for 1 x 4, 2 x 2 and 4 x 1; for 1 x 8, 2 x 4,
  4 x 2 and 8 x 1 (slow); and, 12 updates, for 1 x 6, 2 x 3, 3 x 2 (worker
  counts and k that are not powers of two);
* the same on synthetic JPEGs with random crops and flips, decoded by 2
  MultiprocessIterator workers on one side and in the main process on the other;
* a run checkpointed on 4 ranks and resumed on 2, and on 1, ends where the
  uninterrupted 4-rank run ends, bit for bit (arrays, summary.json, the log).

comm.reduction=fast (ChainerMN's all-reduce) is shown to miss this: its 1 x 4
and 2 x 2 runs differ after 6 updates.
"""
import json
import os
import shutil

import pytest

from helpers import assert_same_bits, assert_same_metrics, read_summary, state, train

DEMO = 'configs/demo.yaml'
QUIET = ['train.progress_bar=false', 'resume=none']
UPDATES = 24


def model_state(out):
    return {k: v for k, v in state(out).items() if k.startswith('updater/model:main/')}


def log_losses(out):
    with open(os.path.join(out, 'log')) as f:
        return [(e['iteration'], e['main/loss'], e.get('validation/main/loss'))
                for e in json.load(f)]


def run_ok(n, *overrides, timeout=300):
    r = train(n, DEMO, *overrides, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def same_run_on(tmp_path, layouts, per_worker=32, updates=UPDATES):
    """Run the demo for each (workers, k); assert every run's bits equal the first's."""
    outs = []
    for ranks, k in layouts:
        out = str(tmp_path / ('w%dx%d' % (ranks, k)))
        r = run_ok(ranks, 'out=' + out, 'batch.global=%d' % (ranks * k * per_worker),
                   'batch.per_worker=%d' % per_worker,
                   'train.iterations=%d' % updates, 'checkpoint.every_iterations=%d' % updates,
                   *QUIET)
        assert '%d workers x %d per worker x %d microbatch' % (ranks, per_worker, k) in r.stdout
        outs.append(out)
    first = state(outs[0])
    assert first['updater/iteration'] == updates
    for out in outs[1:]:
        assert_same_bits(first, state(out))
        assert_same_metrics(read_summary(outs[0]), read_summary(out))
        assert log_losses(out) == log_losses(outs[0])
    return outs


def test_digits_bit_identical_on_1x4_2x2_and_4x1(tmp_path):
    outs = same_run_on(tmp_path, [(1, 4), (2, 2), (4, 1)])
    s = read_summary(outs[0])
    assert s['microbatches'] == 4 and read_summary(outs[-1])['microbatches'] == 1
    assert 0.5 < s['val_top1'] < 1.0       # trained, not a constant


@pytest.mark.slow
def test_digits_bit_identical_on_1x8_2x4_4x2_and_8x1(tmp_path):
    same_run_on(tmp_path, [(1, 8), (2, 4), (4, 2), (8, 1)])


def test_digits_bit_identical_when_k_and_workers_are_not_powers_of_two(tmp_path):
    # 6 groups: 2 x 3 splits the tree's leaves [0, 6) at 3, inside its subtree
    # [0, 4): each rank sends two partial sums, and the bits still agree.
    same_run_on(tmp_path, [(1, 6), (2, 3), (3, 2)], 16, updates=12)


def test_fast_reduction_misses_the_bits(tmp_path):
    """What the canonical order fixes: ChainerMN's all-reduce adds in another order."""
    outs = {}
    for ranks in (1, 2):
        outs[ranks] = str(tmp_path / ('f%d' % ranks))
        run_ok(ranks, 'out=' + outs[ranks], 'train.iterations=6', 'checkpoint.every_iterations=6',
               'comm.reduction=fast', *QUIET)
    a, b = model_state(outs[1]), model_state(outs[2])
    assert a.keys() == b.keys()
    assert any(a[k].tobytes() != b[k].tobytes() for k in a)


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
    assert_same_bits(state(a), state(b))
    assert_same_metrics(read_summary(a), read_summary(b))
    # 40 training images, batch 16, 4 updates: the second epoch's permutation and
    # fresh crops were drawn (1.6 epochs).
    assert read_summary(a)['epochs'] == pytest.approx(1.6)


@pytest.mark.slow
def test_checkpoint_on_4_ranks_resumes_on_2_and_on_1(tmp_path):
    # 3 classes of digits: ~430 training images, 3.4 updates per epoch, so the
    # log has rows from before the checkpoint (iteration 5) and after it.
    common = ['data.classes=3', 'train.iterations=8', 'checkpoint.every_iterations=5',
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
        assert_same_bits(state(full), state(out))
        s = read_summary(out)
        assert s['resumed_from_iteration'] == 5 and s['workers'] == ranks
        assert_same_metrics(read_summary(full), s)
        # The log's history survived the move: the same rows, the same numbers.
        log = json.load(open(os.path.join(out, 'log')))
        assert [e['iteration'] for e in log] == [e['iteration'] for e in log_full]
        for e, f in zip(log, log_full):
            for key in ('epoch', 'main/loss', 'main/accuracy', 'validation/main/loss',
                        'validation/main/accuracy', 'lr'):
                assert e[key] == f[key], (e['iteration'], key)
