"""The global sample order (pfn15.data.order): pure functions, no MPI."""
import collections

import numpy
import pytest

from pfn15.data import order


def rank_streams(size, global_batch, per_worker, workers, updates, schedule=()):
    """Every (update, worker, microbatch) slot's global positions, read through RankStream."""
    plan = order.BatchPlan(global_batch, size, schedule, per_worker=per_worker, workers=workers)
    slots = {}
    for r in range(workers):
        stream = order.RankStream(plan, r)
        q = stream.start(0)
        for i in range(updates):
            assert stream.start(i) == q
            k = plan.batch(i) // (workers * per_worker)
            for m in range(k):
                slots[i, r, m] = [stream.global_position(q + j) for j in range(per_worker)]
                q += per_worker
    return plan, slots


@pytest.mark.parametrize('size', [96, 100, 101])          # divides 8 x 4 or not
@pytest.mark.parametrize('workers', [1, 2, 4, 8])
def test_every_sample_once_per_epoch_over_all_ranks_and_microbatches(size, workers):
    per_worker, global_batch = 4, 32
    updates = 3 * size // global_batch + 2
    plan, slots = rank_streams(size, global_batch, per_worker, workers, updates)
    so = order.SampleOrder(seed=3, size=size)
    positions = sorted(p for ps in slots.values() for p in ps)
    # The slots tile the stream: no position twice, none skipped.
    assert positions == list(range(updates * global_batch))
    seen = collections.defaultdict(list)
    for p in positions:
        index, epoch = so.key(p)
        seen[epoch].append(index)
    for epoch in range(updates * global_batch // size):        # complete epochs
        assert sorted(seen[epoch]) == list(range(size)), epoch


def test_the_same_groups_for_every_worker_count():
    size, b, B = 100, 4, 32
    groups = {}
    for workers in (1, 2, 4, 8):
        _, slots = rank_streams(size, B, b, workers, 5)
        k = B // (workers * b)
        # Group g of update i sits in slot (g // k, g % k).
        groups[workers] = {(i, r * k + m): tuple(ps) for (i, r, m), ps in slots.items()}
    for workers in (2, 4, 8):
        assert groups[workers] == groups[1]
    # A group is b consecutive positions of the update's global batch.
    assert groups[1][2, 3] == tuple(range(2 * B + 3 * b, 2 * B + 4 * b))
    assert order.slot_of_group(5, 2) == (2, 1)


def test_permutation_depends_on_seed_and_epoch_only():
    a = order.epoch_permutation(0, 1, 50)
    assert numpy.array_equal(a, order.epoch_permutation(0, 1, 50))
    assert not numpy.array_equal(a, order.epoch_permutation(0, 2, 50))
    assert not numpy.array_equal(a, order.epoch_permutation(1, 1, 50))
    assert sorted(a) == list(range(50))
    so = order.SampleOrder(0, 50)
    idx, ep = so.keys(40, 20)                   # straddles the end of epoch 0: wrap
    assert list(ep) == [0] * 10 + [1] * 10
    assert list(idx[:10]) == list(order.epoch_permutation(0, 0, 50)[40:])
    assert list(idx[10:]) == list(order.epoch_permutation(0, 1, 50)[:10])
    assert [so.key(p) for p in range(40, 60)] == list(zip(idx.tolist(), ep.tolist()))


def test_batch_size_control_positions_are_cumulative_samples():
    size, b = 64, 4
    schedule = [[0, 16], [1, 32]]
    plan, slots = rank_streams(size, 16, b, 2, 8, schedule)
    assert [plan.batch(i) for i in range(6)] == [16, 16, 16, 16, 32, 32]
    assert [plan.samples_before(i) for i in range(7)] == [0, 16, 32, 48, 64, 96, 128]
    assert all(plan.iteration_of(s) == 4 for s in range(64, 96))
    positions = sorted(p for ps in slots.values() for p in ps)
    assert positions == list(range(plan.samples_before(8)))


@pytest.mark.parametrize('size,workers', [(10, 3), (10, 4), (7, 7), (5, 8)])
def test_validation_shares_cover_every_image_once(size, workers):
    got = []
    for r in range(workers):
        lo, hi = order.validation_share(size, workers, r)
        got.extend(range(lo, hi))
    assert got == list(range(size))
