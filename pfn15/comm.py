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
        return chainermn.create_communicator(name, allreduce_grad_dtype=numpy.float16)
    comm = chainermn.create_communicator(name)
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
