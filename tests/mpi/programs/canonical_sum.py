"""Under mpiexec -n W: pfn15.reduction.allreduce of G seeded leaves, each rank
owning a contiguous run of them (`--sizes` or an even split); every rank must
hold the same bits, and rank 0 writes them to --out.

    mpiexec -n 3 python tests/mpi/programs/canonical_sum.py --leaves 12 --out s.npy
"""
import pfn15  # noqa: F401
import argparse

import numpy
from mpi4py import MPI

from pfn15 import reduction


def leaves(G, n, dtype):
    """G leaves of n values spread over 12 decades: sums that depend on the order."""
    rng = numpy.random.RandomState(0)
    out = []
    for _ in range(G):
        v = rng.randn(n) * 10.0 ** rng.randint(-6, 6, n)
        out.append((v.astype(dtype), (v * 3).astype(numpy.float64)))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--leaves', type=int, required=True)
    p.add_argument('--n', type=int, default=1001)
    p.add_argument('--sizes', default='')
    p.add_argument('--dtype', default='float32')
    p.add_argument('--out', required=True)
    a = p.parse_args()
    comm = MPI.COMM_WORLD
    sizes = [int(s) for s in a.sizes.split(',')] if a.sizes else None
    ranges = reduction.ranges(a.leaves, comm.size, sizes)
    data = leaves(a.leaves, a.n, numpy.dtype(a.dtype))
    lo, hi = ranges[comm.rank]
    acc = reduction.Accumulator(lo, hi, a.leaves)
    for g in range(lo, hi):
        acc.add(tuple(x.copy() for x in data[g]))
        assert len(acc.stack) <= 2 + 2 * max(1, (hi - lo)).bit_length()   # O(log k) held
    template = data[0]
    total = reduction.allreduce(comm, acc.nodes(), ranges, a.leaves, template)
    everyone = comm.gather([t.tobytes() for t in total], root=0)
    if comm.rank == 0:
        assert all(e == everyone[0] for e in everyone), 'ranks disagree'
        numpy.savez(a.out, *total)
        print('canonical sum of %d leaves on %d ranks (ranges %s)' % (a.leaves, comm.size, ranges))


if __name__ == '__main__':
    main()
