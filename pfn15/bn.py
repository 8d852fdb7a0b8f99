"""Batch normalization without moving averages (Akiba et al. 2017).

Training normalizes with each worker's own minibatch (BN group). With BN decay
0, each BatchNormalization link's avg_mean/avg_var hold the statistics of the
last training minibatch; with k microbatches per worker the updater leaves
the mean of the k groups' statistics there. Before evaluation they are
averaged over all workers: the mean over every BN group of the last global
batch -- the same number for every worker count, and exactly PFN's
definition (the last minibatch's statistics averaged over workers) at k = 1.

With comm.reduction=canonical the updater already leaves every rank holding
that mean, summed over the groups in pfn15.reduction's fixed tree (the same
bits on every worker count); averaging identical values again would only
round them, so here they are taken as they are.
"""
import chainer
import chainer.links as L


# Set on a BN link by the canonical updater once its statistics are the global mean.
CANONICAL = 'pfn15_canonical_statistics'


def batch_norms(model):
    """Every BatchNormalization link in `model`, in a fixed (name) order."""
    return [link for _, link in sorted(model.namedlinks(), key=lambda x: x[0])
            if isinstance(link, L.BatchNormalization)]


def averaged_statistics(model, comm):
    """[(link, mean over ranks of avg_mean, of avg_var)] for every BN link; the links
    are left as they are. All statistics travel in one all-reduce (one buffer)."""
    links = batch_norms(model)
    if not links:
        return []
    if all(getattr(link, CANONICAL, False) for link in links):
        return [(link, link.avg_mean, link.avg_var) for link in links]
    xp = chainer.backend.get_array_module(links[0].avg_mean)
    arrays = [a for link in links for a in (link.avg_mean, link.avg_var)]
    flat = xp.concatenate([a.ravel() for a in arrays])
    flat = comm.allreduce(flat) / comm.size   # ChainerMN's all-reduce is a sum
    out, offset = [], 0
    for link in links:
        pair = []
        for a in (link.avg_mean, link.avg_var):
            pair.append(flat[offset:offset + a.size].reshape(a.shape))
            offset += a.size
        out.append((link, pair[0], pair[1]))
    return out


def allreduce_statistics(model, comm):
    """Replace avg_mean and avg_var of every BN link by their mean over all ranks, in place."""
    for link, mean, var in averaged_statistics(model, comm):
        if mean is link.avg_mean:
            continue
        link.avg_mean[...] = mean
        link.avg_var[...] = var
