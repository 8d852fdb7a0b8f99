"""Under mpiexec -n 3: allreduce_statistics makes every rank's BN statistics the
mean over ranks of the per-rank last-minibatch statistics."""
import pfn15  # noqa: F401  (first: its _compat shims must precede Chainer)
import numpy

import chainer
import chainermn

from pfn15 import bn
from pfn15.models import resnet_small


def main():
    comm = chainermn.create_communicator('naive')
    numpy.random.seed(7)                      # the same model on every rank
    model = resnet_small(classes=4, in_channels=3, blocks_per_stage=1, width=4, bn_decay=0.0)
    rng = numpy.random.RandomState(100 + comm.rank)   # a different minibatch per rank
    for step in range(2):                     # statistics must be the *last* minibatch's
        x = (rng.randn(6, 3, 8, 8) * (1 + comm.rank) + comm.rank + step).astype(numpy.float32)
        with chainer.using_config('train', True):
            model(x)
    # Last-minibatch statistics: the stem BN holds the batch mean of its input.
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        h = model.stem.conv(x).array
    numpy.testing.assert_allclose(model.stem.bn.avg_mean, h.mean(axis=(0, 2, 3)), rtol=1e-5,
                                  atol=1e-6)
    m = h.shape[0] * h.shape[2] * h.shape[3]
    numpy.testing.assert_allclose(model.stem.bn.avg_var, h.var(axis=(0, 2, 3)) * m / (m - 1),
                                  rtol=1e-4, atol=1e-6)

    links = bn.batch_norms(model)
    assert len(links) == 1 + 3 * 4, len(links)   # stem + 3 blocks x (a, b, c, shortcut)
    before = [(l.avg_mean.copy(), l.avg_var.copy()) for l in links]
    everyone = comm.mpi_comm.allgather(before)
    assert not numpy.allclose(everyone[0][0][0], everyone[1][0][0])   # ranks did differ
    bn.allreduce_statistics(model, comm)
    for i, link in enumerate(links):
        want_mean = numpy.mean([r[i][0] for r in everyone], axis=0)
        want_var = numpy.mean([r[i][1] for r in everyone], axis=0)
        numpy.testing.assert_allclose(link.avg_mean, want_mean, rtol=1e-6, atol=1e-7)
        numpy.testing.assert_allclose(link.avg_var, want_var, rtol=1e-6, atol=1e-7)
    after = comm.mpi_comm.allgather([l.avg_mean for l in links])
    for other in after[1:]:
        for a, b in zip(after[0], other):
            assert numpy.array_equal(a, b)
    if comm.rank == 0:
        print('BN statistics OK on', comm.size, 'ranks,', len(links), 'BN links')


if __name__ == '__main__':
    main()
