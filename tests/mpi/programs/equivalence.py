"""Run `steps` updates of a BN-free model on this MPI world; rank 0 saves the parameters.

    mpiexec -n W python tests/mpi/programs/equivalence.py --batch b --microbatches k --out P

The global batch W x k x b is made of the same samples in the same order for
every (W, k, b), so the final parameters must agree across layouts: this is
what proves the gradient averaging (all-reduce) and the accumulation.
"""
import pfn15  # noqa: F401  (first: its _compat shims must precede Chainer)
import argparse

import numpy

import chainer
import chainer.functions as F
import chainer.links as L
import chainermn

from pfn15 import comm as comm_module
from pfn15 import optimizers
from pfn15.config import OptimizerConfig
from pfn15.models import Classifier
from pfn15.training.updater import AccumulatingUpdater


class MLP(chainer.Chain):
    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(12, 16)
            self.l2 = L.Linear(16, 5)

    def forward(self, x):
        return self.l2(F.tanh(self.l1(x)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--batch', type=int, required=True)
    p.add_argument('--microbatches', type=int, default=1)
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--optimizer', default='rmsprop_warmup')
    p.add_argument('--out', required=True)
    a = p.parse_args()
    comm = chainermn.create_communicator('naive')
    W, k, b = comm.size, a.microbatches, a.batch
    B = W * k * b
    rng = numpy.random.RandomState(0)
    x = rng.randn(a.steps, B, 12).astype(numpy.float32)
    t = rng.randint(0, 5, size=(a.steps, B)).astype(numpy.int32)
    # Rank r's share of each step: a contiguous block of k x b samples.
    share = slice(comm.rank * k * b, (comm.rank + 1) * k * b)
    mine = chainer.datasets.TupleDataset(x[:, share].reshape(-1, 12), t[:, share].reshape(-1))

    numpy.random.seed(1234 + comm.rank)   # different init per rank: the broadcast must fix it
    model = Classifier(MLP())
    opt = optimizers.build(OptimizerConfig(name=a.optimizer, weight_decay=1e-3), model, lr=0.3)
    if a.optimizer == 'rmsprop_warmup':
        opt.alpha_sgd = 0.4
    opt = comm_module.multi_node_optimizer(opt, comm, model)
    init = {'init' + name: p.array.copy() for name, p in model.namedparams()}
    it = chainer.iterators.SerialIterator(mine, b, shuffle=False)
    updater = AccumulatingUpdater(it, opt, microbatches=k)
    reporter = chainer.Reporter()   # what a Trainer would provide
    reporter.add_observer('main', model)
    for _ in range(a.steps):
        with reporter.scope({}):
            updater.update()
    if comm.rank == 0:
        final = {name: p.array for name, p in model.namedparams()}
        numpy.savez(a.out, **final, **init)
        print('saved', a.out)


if __name__ == '__main__':
    main()
