"""pfn15.reduction's all-reduce over real MPI ranks (tests/mpi/programs/canonical_sum.py):
the same bits for every split of the leaves into contiguous ranges, and the
canonical tree's. The tree and its accumulator alone: tests/unit/test_reduction.py."""
import numpy

from helpers import mpirun, mpi_script

from pfn15 import reduction


def test_allreduce_on_real_ranks_same_bits_for_any_split(tmp_path):
    runs = [(1, ''), (2, ''), (3, ''), (4, ''), (4, '1,5,0,6'), (3, '7,0,5')]
    got = []
    for ranks, sizes in runs:
        out = str(tmp_path / ('s%d_%s.npz' % (ranks, sizes.replace(',', '-'))))
        args = [mpi_script('canonical_sum.py'), '--leaves', '12', '--out', out]
        r = mpirun(ranks, args + (['--sizes', sizes] if sizes else []), timeout=120)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        with numpy.load(out) as f:
            got.append([f[k].tobytes() for k in sorted(f.files)])
    assert all(g == got[0] for g in got)
    want = reduction.tree_sum([tuple(x) for x in _script_leaves()])
    assert [w.tobytes() for w in want] == got[0]


def _script_leaves():
    import importlib.util
    spec = importlib.util.spec_from_file_location('canonical_sum', mpi_script('canonical_sum.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.leaves(12, 1001, numpy.dtype(numpy.float32))
