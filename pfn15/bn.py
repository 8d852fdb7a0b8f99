"""Batch normalization without moving averages (Akiba et al. 2017).

Training normalizes with each worker's own minibatch. With BN decay 0, each
BatchNormalization link's avg_mean/avg_var hold the statistics of the last
training minibatch; before evaluation they are averaged over all workers.
"""
import chainer
import chainer.links as L


def batch_norms(model):
    """Every BatchNormalization link in `model`, in a fixed (name) order."""
    return [link for _, link in sorted(model.namedlinks(), key=lambda x: x[0])
            if isinstance(link, L.BatchNormalization)]


def allreduce_statistics(model, comm):
    """Replace avg_mean and avg_var of every BN link by their mean over all ranks, in place.

    All statistics travel in one all-reduce (one buffer), not two per layer.
    """
    links = batch_norms(model)
    if not links:
        return
    xp = chainer.backend.get_array_module(links[0].avg_mean)
    arrays = [a for link in links for a in (link.avg_mean, link.avg_var)]
    flat = xp.concatenate([a.ravel() for a in arrays])
    flat = comm.allreduce(flat) / comm.size   # ChainerMN's all-reduce is a sum
    offset = 0
    for a in arrays:
        a[...] = flat[offset:offset + a.size].reshape(a.shape)
        offset += a.size
