"""A new collective check as one class and one CHECKS entry, in a real training
run (tests/mpi/test_checks_on_ranks.py runs this under mpiexec -n 2).

    mpiexec -n 2 python tests/mpi/programs/check_dummy.py STOP_AT configs/demo.yaml out=... [key=value ...]

`RankSum` contributes rank + 1 and 10 x the iteration from every rank; once the
iteration reaches STOP_AT it stops the job with exit status 7, naming the sums
it was judged on: 3 (1 + 2) and 20 x STOP_AT on 2 ranks, if one all-reduce
carried them.
"""
import sys

import pfn15  # noqa: F401

from pfn15.training import checks


class RankSumReached(checks.CheckFailed):
    status = 7


class RankSum(checks.Check):
    size = 2

    def __init__(self, comm, stop_at):
        self.comm, self.stop_at, self.iteration = comm, stop_at, 0

    @classmethod
    def create(cls, cfg, parts):
        return cls(parts.comm, STOP_AT)

    def local(self):
        self.iteration += 1
        return [self.comm.rank + 1, 10 * self.iteration]

    def judge(self, totals, at):
        if at.iteration >= self.stop_at:
            raise RankSumReached('rank sum %g, iteration sum %g at iteration %d'
                                 % (totals[0], totals[1], at.iteration))


STOP_AT = int(sys.argv[1])
checks.CHECKS.append(RankSum)

if __name__ == '__main__':
    from pfn15 import train
    sys.exit(train.main(sys.argv[2:]))
