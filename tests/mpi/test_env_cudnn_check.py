"""The cuDNN check at the start of a GPU run (pfn15.env.check_cudnn) on two real
ranks where CuPy is unusable: one line from rank 0, a warning or, when cuDNN is
required, exit 2."""
import pytest

from helpers import mpi_script, mpirun


@pytest.mark.parametrize('require', [False, True])
def test_cudnn_check_at_gpu_start(require):
    """A GPU run where cuDNN is off (here: no CuPy): one line from rank 0; exit 2 if required."""
    r = mpirun(2, [mpi_script('cudnn_check.py'), 'true' if require else 'false'], timeout=120)
    lines = [line for line in r.stderr.splitlines() if 'cuDNN is off' in line]
    assert len(lines) == 1, r.stderr          # once, from rank 0
    assert '(all 2 ranks)' in lines[0] and 'CuPy is unusable' in lines[0]
    if require:
        assert r.returncode == 2, r.stderr
        assert lines[0].startswith('pfn15: error: train.require_cudnn is true')
    else:
        assert r.returncode == 0, r.stderr
        assert lines[0].startswith('pfn15: warning: cuDNN is off')
        assert 'im2col' in lines[0]
        assert r.stdout.count('continued') == 2
