"""Under mpiexec -n 3: pfn15.data.build gives every training sample to exactly one rank."""
import pfn15  # noqa: F401  (first: its _compat shims must precede Chainer)
import hashlib
import sys

import chainermn

from pfn15 import config, data
from pfn15.data import digits


def fingerprint(example):
    x, t = example
    return hashlib.sha1(x.tobytes() + bytes([int(t)])).hexdigest()


def main():
    comm = chainermn.create_communicator('naive')
    cfg = config.load('configs/demo.yaml', sys.argv[1:])
    train, val, meta = data.build(cfg, comm)
    mine = [fingerprint(train[i]) for i in range(len(train))]
    mine_val = [fingerprint(val[i]) for i in range(len(val))]
    every = comm.mpi_comm.gather((mine, mine_val), root=0)
    if comm.rank == 0:
        raw_train, raw_val, _ = digits.load(cfg.data, seed=cfg.seed)
        for k, raw in ((0, raw_train), (1, raw_val)):
            got = [f for r in every for f in r[k]]
            want = [fingerprint(raw[i]) for i in range(len(raw))]
            assert len(got) == len(want), (len(got), len(want))
            assert sorted(got) == sorted(want)            # each sample exactly once
            sizes = [len(r[k]) for r in every]
            assert max(sizes) - min(sizes) <= 1, sizes
        assert meta['train_size'] == len(raw_train)
        print('scatter OK: %d train samples over %d ranks' % (len(raw_train), comm.size))


if __name__ == '__main__':
    main()
