"""Collective per-iteration checks (pfn15/training/checks.py) on real ranks: a new
check added as one class + one entry (tests/mpi/programs/check_dummy.py) is
all-reduced with the others and judged, in a 2-rank run. The judging logic
alone: tests/unit/test_checks.py."""
import os

from helpers import mpi_script, mpirun


def test_a_new_check_is_all_reduced_and_judged_on_real_ranks(tmp_path):
    out = str(tmp_path / 'run')
    r = mpirun(2, [mpi_script('check_dummy.py'), '4', 'configs/demo.yaml', 'out=' + out,
                   'train.progress_bar=false'], timeout=300)
    assert r.returncode == 7, r.stdout[-2000:] + r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith('pfn15: error:')]
    # one line from rank 0, judged on the sums over both ranks: 1 + 2, and 10 x 4 twice
    assert errors == ['pfn15: error: rank sum 3, iteration sum 80 at iteration 4'], r.stderr
    assert 'Traceback' not in r.stderr
    assert not os.path.exists(os.path.join(out, 'summary.json'))
