"""pfn15.reduction: the canonical tree and its streaming accumulator -- the same bits
for every split of the leaves into contiguous ranges. The all-reduce that finishes
it over real MPI ranks: tests/mpi/test_reduction_on_ranks.py."""
import itertools

import numpy
import pytest

from pfn15 import plan, reduction
from pfn15.data import order


def _leaves(G, n=257, seed=0, dtype=numpy.float32):
    rng = numpy.random.RandomState(seed)
    return [((rng.randn(n) * 10.0 ** rng.randint(-6, 6, n)).astype(dtype),) for _ in range(G)]


def _split_sum(leaves, sizes):
    """The tree finished from each range's cover, as the all-reduce does on one rank."""
    G = len(leaves)
    known = {}
    for lo, hi in reduction.ranges(G, len(sizes), sizes):
        acc = reduction.Accumulator(lo, hi, G)
        for g in range(lo, hi):
            acc.add(tuple(x.copy() for x in leaves[g]))
        known.update(acc.nodes())
    return reduction.evaluate(known, G, lambda a, b: tuple(x + y for x, y in zip(a, b)))[0]


def test_tree_shape_and_covers():
    assert [reduction.split(n) for n in (2, 3, 4, 5, 8, 9, 12)] == [1, 2, 2, 4, 4, 8, 8]
    assert reduction.cover(0, 8, 8) == [(0, 8)]
    assert reduction.cover(0, 4, 8) == [(0, 4)]            # aligned: one subtree
    assert reduction.cover(0, 3, 12) == [(0, 2), (2, 3)]    # not a subtree: partial sums
    assert reduction.cover(3, 6, 12) == [(3, 4), (4, 6)]
    assert reduction.cover(8, 12, 12) == [(8, 12)]
    assert reduction.cover(5, 5, 12) == []


@pytest.mark.parametrize('G', [1, 2, 3, 4, 6, 7, 8, 12, 16])
def test_every_contiguous_split_gives_the_same_bits(G):
    leaves = _leaves(G)
    want = reduction.tree_sum(leaves)[0]
    splits = set()
    for parts in range(1, min(G, 5) + 1):
        for cuts in itertools.combinations(range(1, G), parts - 1):
            bounds = (0,) + cuts + (G,)
            splits.add(tuple(b - a for a, b in zip(bounds, bounds[1:])))
    splits.add((0,) + (G,) + (0,))                          # ranks with no leaves
    for sizes in splits:
        got = _split_sum(leaves, list(sizes))
        assert got.tobytes() == want.tobytes(), sizes


def test_the_order_matters_so_the_test_can_fail():
    leaves = _leaves(8)
    want = reduction.tree_sum(leaves)[0]
    sequential = leaves[0][0].copy()
    for (x,) in leaves[1:]:
        sequential = sequential + x                         # ((g0 + g1) + g2) + ...
    assert sequential.tobytes() != want.tobytes()


def test_accumulator_holds_log_k_partial_sums_and_checks_its_leaves():
    acc = reduction.Accumulator(0, 64, 64)
    most = 0
    for (x,) in _leaves(64, n=3):
        acc.add((x,))
        most = max(most, len(acc.stack))
    assert most <= 7 and len(acc.nodes()) == 1
    with pytest.raises(ValueError):
        acc.add((x,))
    with pytest.raises(ValueError):
        reduction.Accumulator(0, 4, 8).nodes()


def test_validation_batches_are_fixed_and_cover_every_image():
    for size, batch, workers in [(360, 32, 1), (360, 32, 3), (360, 32, 4), (10, 4, 8), (0, 4, 2)]:
        runs = order.validation_batches(size, batch, workers)
        assert runs[0][0] == 0 and runs[-1][1] == -(-size // batch)
        images = []
        for r in range(workers):
            lo, hi = order.validation_share(size, workers, r, batch)
            assert lo % batch == 0 or lo == size          # starts on a batch boundary
            images.extend(range(lo, hi))
        assert images == list(range(size))


def test_planner_models_the_canonical_allreduce():
    n, a, b = 102e6, 5e-6, 1 / 10e9
    # One node, aligned ranges: the ring's volume exactly.
    assert plan.canonical_time(n, 4, a, b, gpus_per_node=4) == pytest.approx(
        plan.allreduce_time(n, 4, a, b, 'ring', gpus_per_node=4))
    # A split that is not a subtree sends more; many GPUs per node cost g x inter-node.
    assert plan.max_covers(32 * 12, 32, 4) == 2 and plan.max_covers(32 * 16, 32, 4) == 1
    assert plan.canonical_time(n, 4, a, b, 4, covers=2) > plan.canonical_time(n, 4, a, b, 4)
    ring = plan.allreduce_time(n, 64, a, b, 'ring', gpus_per_node=8)
    assert plan.canonical_time(n, 64, a, b, gpus_per_node=8) > 6 * ring
    s = plan.presets()['pfn']
    s.reduction = 'canonical'
    assert plan.plan_one(s, 64)['allreduce_s'] > 0


def test_planner_calibrates_from_a_canonical_bench_json(tmp_path):
    import json
    path = tmp_path / 'ar.json'
    path.write_text(json.dumps({'kind': 'allreduce', 'comm': 'naive', 'reduction': 'canonical',
                                'alpha_s': 1e-3, 'beta_s_per_byte': 2.5e-9}))
    s = plan.calibrate(plan.presets()['pfn'], [str(path)])
    assert s.reduction == 'canonical' and not s.calls_per_array
    fast = dict(json.loads(path.read_text()), reduction='fast')
    path.write_text(json.dumps(fast))
    s = plan.calibrate(plan.presets()['pfn'], [str(path)])
    assert s.reduction == 'fast' and s.calls_per_array
