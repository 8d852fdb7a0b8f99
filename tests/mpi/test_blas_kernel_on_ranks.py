"""pfn15.blas_kernel under mpiexec: MPI ranks and their forkserver children run the
kernel pfn15 chose, read back through threadpoolctl (no timings). The choice
itself, in single interpreters: tests/unit/test_blas_kernel.py."""
import json
import os

from pfn15 import blas_kernel

from helpers import ROOT

BEST = blas_kernel.best_coretype(blas_kernel.cpu_flags())


CHILDREN = r'''
import json, multiprocessing, sys
import pfn15


def arch(_):
    from pfn15 import blas_kernel
    return blas_kernel.report()['architecture'], blas_kernel.decision()[1]


if __name__ == '__main__':
    ctx = multiprocessing.get_context('forkserver')
    with ctx.Pool(1) as pool:
        child = pool.map(arch, [0])[0]
    from mpi4py import MPI
    rank = MPI.COMM_WORLD.rank
    # One file per rank: two ranks' lines on one stdout can land on one line.
    with open('%s/rank%d.json' % (sys.argv[1], rank), 'w') as f:
        json.dump({'rank': rank, 'self': arch(0), 'forkserver': child}, f)
'''


def test_mpi_ranks_and_forkserver_children_run_the_same_kernel(tmp_path):
    from helpers import mpirun
    script = tmp_path / 'children.py'
    script.write_text(CHILDREN)
    env = {k: v for k, v in os.environ.items() if k not in (blas_kernel.VAR, blas_kernel.MARK)}
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    r = mpirun(2, [str(script), str(tmp_path)], timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(p.read_text()) for p in sorted(tmp_path.glob('rank*.json'))]
    assert sorted(row['rank'] for row in rows) == [0, 1]
    for row in rows:
        assert row['self'][0] == row['forkserver'][0], row
        if BEST is not None and row['self'][0] is not None:
            assert row['self'][0] == BEST
            assert 'parent' in row['forkserver'][1]   # inherited pfn15's choice, not the user's
