"""Under mpiexec -n W: the real data build and training iterator of every rank,
read for 3 epochs' worth of updates, hand every training sample to exactly one
(rank, microbatch) slot per epoch -- whether or not W divides the dataset --
and split the validation set into shares that cover it exactly once.

    mpiexec -n W python tests/mpi/programs/global_order.py key=value ...
"""
import pfn15  # noqa: F401  (first: its _compat shims must precede Chainer)
import collections
import hashlib
import math
import sys

import chainermn

from pfn15 import config, data
from pfn15.data import digits, order
from pfn15.data.iterator import GlobalOrderIterator


def fingerprint(example):
    x, t = example
    return hashlib.sha1(x.tobytes() + bytes([int(t)])).hexdigest()


class AtIteration(object):
    iteration = 0


def main():
    comm = chainermn.create_communicator('naive')
    cfg = config.load('configs/demo.yaml', sys.argv[1:], workers=comm.size)
    train, val, meta = data.build(cfg, comm)
    n = meta['train_size']
    plan = order.BatchPlan.from_config(cfg, n, comm.size)
    updates = int(math.ceil(3 * n / cfg.batch.global_))
    k = plan.microbatches(0)
    it = GlobalOrderIterator(train, cfg.seed, plan, comm.rank, updates)
    it.follow(AtIteration())
    mine = []   # (epoch, sample fingerprint), in stream order
    for i in range(updates):
        for m in range(k):
            batch = it.next()
            assert len(batch) == cfg.batch.per_worker
            keys = [it._inner.dataset.key(j) for j in range(
                (i * k + m) * cfg.batch.per_worker, (i * k + m + 1) * cfg.batch.per_worker)]
            for (index, epoch), example in zip(keys, batch):
                assert fingerprint(example) == fingerprint(train[index])
                mine.append((epoch, fingerprint(example)))
    mine_val = [fingerprint(val[i]) for i in range(len(val))]
    everyone = comm.mpi_comm.gather((mine, mine_val), root=0)
    if comm.rank == 0:
        raw_train, raw_val, _ = digits.load(cfg.data, seed=cfg.seed)
        want = sorted(fingerprint(raw_train[i]) for i in range(len(raw_train)))
        per_epoch = collections.defaultdict(list)
        for r_mine, _ in everyone:
            for epoch, f in r_mine:
                per_epoch[epoch].append(f)
        assert sum(len(v) for v in per_epoch.values()) == updates * cfg.batch.global_
        for epoch in range(updates * cfg.batch.global_ // n):     # the complete epochs
            assert sorted(per_epoch[epoch]) == want, epoch          # each sample exactly once
        got_val = sorted(f for _, v in everyone for f in v)
        assert got_val == sorted(fingerprint(raw_val[i]) for i in range(len(raw_val)))
        assert meta['train_size'] == len(raw_train)
        print('global order OK: %d train samples, %d ranks x %d microbatches, %d updates, '
              '%d complete epochs' % (n, comm.size, k, updates, updates * cfg.batch.global_ // n))


if __name__ == '__main__':
    main()
