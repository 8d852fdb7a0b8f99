"""Data parallelism, accumulation, BN statistics and the global sample order under real
MPI processes."""
import numpy
import pytest

from helpers import mpi_script, mpirun


def params_after(n, batch, microbatches, tmp_path, optimizer='rmsprop_warmup'):
    out = str(tmp_path / ('p_%d_%d_%d_%s.npz' % (n, batch, microbatches, optimizer)))
    r = mpirun(n, [mpi_script('equivalence.py'), '--batch', str(batch), '--microbatches',
                   str(microbatches), '--out', out, '--optimizer', optimizer])
    assert r.returncode == 0, r.stdout + r.stderr
    with numpy.load(out) as f:
        return {k: f[k] for k in f.files}


def assert_same(a, b, rtol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        numpy.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=1e-7, err_msg=k)


@pytest.mark.parametrize('optimizer', ['momentum_sgd', 'rmsprop_warmup'])
def test_two_ranks_equal_one_rank_with_twice_the_batch(tmp_path, optimizer):
    two = params_after(2, 4, 1, tmp_path, optimizer)
    one = params_after(1, 8, 1, tmp_path, optimizer)
    assert_same(two, one)
    # Every rank started from rank 0's (broadcast) parameters, and they moved.
    for k in two:
        if not k.startswith('init'):
            assert numpy.abs(two[k] - two['init' + k]).max() > 1e-4, k


def test_accumulation_equals_more_ranks_and_bigger_batch(tmp_path):
    accumulate = params_after(1, 2, 4, tmp_path)      # 1 rank x 4 microbatches of 2
    ranks = params_after(4, 2, 1, tmp_path)           # 4 ranks x 1 microbatch of 2
    big = params_after(1, 8, 1, tmp_path)             # 1 rank x one batch of 8
    assert_same(accumulate, ranks)
    assert_same(accumulate, big)
    mixed = params_after(2, 2, 2, tmp_path)           # 2 ranks x 2 microbatches of 2
    assert_same(mixed, big)


def test_allreduce_statistics_on_three_ranks():
    r = mpirun(3, [mpi_script('bn_stats.py')])
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'BN statistics OK on 3 ranks' in r.stdout


@pytest.mark.parametrize('ranks,batch', [(2, 128), (3, 96)])
def test_global_order_gives_every_sample_once_per_epoch(ranks, batch):
    # 1,438 training images: 2 ranks divide it, 3 do not; 128 and 96 do not either
    # (batches wrap into the next epoch's permutation).
    r = mpirun(ranks, [mpi_script('global_order.py'), 'batch.global=%d' % batch])
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'global order OK' in r.stdout
