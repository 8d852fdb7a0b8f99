"""Choosing the ChainerMN communicator, and wrapping an optimizer for data parallelism."""
import sys

import chainermn
import numpy

from pfn15 import chainermn_patches


def communicator_name(cfg):
    """'naive' on CPU (the only one without CUDA), 'pure_nccl' on GPU, unless the config says."""
    if cfg.comm.name != 'auto':
        return cfg.comm.name
    return 'pure_nccl' if cfg.train.device == 'gpu' else 'naive'


def create(cfg):
    """The communicator `cfg.comm` asks for; fp16 gradient all-reduce where it exists.

    Only pure_nccl can all-reduce gradients in float16 (Akiba et al. halve
    communication this way); elsewhere rank 0 says so once instead of
    silently ignoring the switch.
    """
    chainermn_patches.apply()   # ChainerMN 7.8.1 on CuPy 13/14 and NumPy 2
    name = communicator_name(cfg)
    if cfg.comm.allreduce_fp16 and name == 'pure_nccl':
        comm = chainermn.create_communicator(name, allreduce_grad_dtype=numpy.float16)
        comm.pfn15_allreduce_dtype = numpy.dtype(numpy.float16)   # the canonical one's too
        return set_reduction(comm, cfg.comm.reduction)
    comm = set_reduction(chainermn.create_communicator(name), cfg.comm.reduction)
    if cfg.comm.allreduce_fp16 and comm.rank == 0:
        print('pfn15: comm.allreduce_fp16 is on, but the %r communicator cannot all-reduce '
              'in float16 (only pure_nccl, on GPUs, can); gradients are all-reduced in '
              'float32.' % name, file=sys.stderr, flush=True)
    return comm


def multi_node_optimizer(optimizer, comm, model):
    """`create_multi_node_optimizer`, with the parameters in sync before the first update.

    ChainerMN's wrapper spends its first `update()` broadcasting parameters
    instead of updating. We broadcast rank 0's parameters here and record the
    parameter set, so every update -- the first included -- is a real one and
    N updates mean N steps on every worker count.
    """
    comm.bcast_data(model)
    mn = chainermn.create_multi_node_optimizer(optimizer, comm)
    mn.is_changed(model)
    return mn


REDUCTIONS = ('canonical', 'fast')


def set_reduction(comm, name):
    """Record `comm.reduction` on the communicator: what pfn15.bn and the updater read."""
    if name not in REDUCTIONS:
        raise ValueError('comm.reduction must be one of %s, not %r' % (REDUCTIONS, name))
    comm.pfn15_reduction = name
    return comm


def reduction_of(comm):
    """'canonical' or 'fast' (ChainerMN's own all-reduce; the default of a bare communicator)."""
    return getattr(comm, 'pfn15_reduction', 'fast')


def allreduce_dtype(comm):
    """The dtype gradients travel and are summed in (None: their own)."""
    return getattr(comm, 'pfn15_allreduce_dtype', None)


def canonical_allreduce(comm, partials, ranges, leaves, template):
    """pfn15.reduction's tree sum over all ranks: NCCL send/recv between GPUs under
    pure_nccl (not run yet: docs/reduction.md), MPI point-to-point otherwise
    (device arrays through the host)."""
    from pfn15 import reduction
    import chainer
    xp = chainer.backend.get_array_module(template[0])
    if xp is not numpy and hasattr(comm, '_init_comms') and hasattr(comm, 'nccl_comm'):
        comm._init_comms()
        return reduction.allreduce_nccl(comm.nccl_comm, comm.size, comm.rank, partials,
                                        ranges, leaves, template)
    if xp is not numpy:
        host = [(node, tuple(chainer.backend.CpuDevice().send(v) for v in values))
                for node, values in partials]
        out = reduction.allreduce(comm.mpi_comm, host, ranges, leaves,
                                  tuple(chainer.backend.CpuDevice().send(t) for t in template))
        return tuple(xp.asarray(v) for v in out)
    return reduction.allreduce(comm.mpi_comm, partials, ranges, leaves, template)
