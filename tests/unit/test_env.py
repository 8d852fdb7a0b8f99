"""`python -m pfn15.env` and pfn15.cuda_libs. The cuDNN check at the start of a GPU
run, on real ranks: tests/mpi/test_env_cudnn_check.py."""
import pfn15  # noqa: F401  (pfn15._compat before Chainer, on NumPy 2)
import os
import subprocess
import sys

import pytest

from helpers import ROOT, child_env

from pfn15 import config as config_module
from pfn15 import env as stack_env


def _env(*args, **extra):
    e = child_env()
    e.update(extra)
    return subprocess.run([sys.executable, '-m', 'pfn15.env'] + list(args), cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=120)


def test_screen_lists_the_stack():
    r = _env()
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for head in ('Python', 'NumPy', 'Chainer', 'CPU update', 'CuPy', 'cuDNN', 'NCCL', 'GPUs',
                 'CUDA libs', 'MPI', 'mpiexec'):
        assert any(line.startswith(head + ' ') for line in lines), (head, r.stdout)
    assert len(lines) <= 25                       # one screen
    # the install compiled the optimizers' CPU pass (pfn15/optimizers/cpu_update.c)
    assert any(line.startswith('CPU update compiled') for line in lines), r.stdout
    numpy_line = next(line for line in lines if line.startswith('NumPy'))
    assert 'BLAS: openblas' in numpy_line and 'kernels' in numpy_line   # threadpoolctl's view
    # the venv's mpiexec (PyPI mpich) is first on PATH and belongs to mpi4py's library
    assert 'belongs to the library mpi4py uses' in r.stdout


def test_cpu_config_can_run_here():
    r = _env('configs/demo.yaml')
    assert r.returncode == 0, r.stderr
    assert 'configs/demo.yaml (demo): can run on this stack' in r.stdout
    assert 'problem' not in r.stderr


def test_gpu_config_fails_here_with_one_line():
    r = _env('configs/32k.yaml')
    assert r.returncode == 2
    problems = [line for line in r.stderr.splitlines() if 'problem' in line]
    assert len(problems) == 1, r.stderr
    assert 'train.device=gpu needs' in problems[0] and 'GPU' in problems[0]


def test_bad_config_is_one_line_exit_2():
    r = _env('configs/demo.yaml', 'train.epochs=lots')
    assert r.returncode == 2
    assert r.stderr.count('\n') == 1 and 'train.epochs' in r.stderr
    r = _env('configs/nope.yaml')
    assert r.returncode == 2 and 'does not exist' in r.stderr


def test_unloadable_mpi_library_is_a_problem():
    # mpi4py told to use an MPI library that is not there (a node whose MPI module is missing)
    r = _env('configs/demo.yaml', MPI4PY_LIBMPI='/nonexistent/libmpi.so')
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert 'MPI       unusable: mpi4py cannot load an MPI library' in r.stdout
    problems = [line for line in r.stderr.splitlines() if 'problem' in line]
    assert len(problems) == 1 and 'MPI: unusable' in problems[0], r.stderr


def _problems(*overrides):
    cfg = config_module.load('configs/demo.yaml', list(overrides), check_paths=False)
    return stack_env.problems(cfg, stack_env.Stack())


def test_config_problems_on_a_cpu_stack():
    assert _problems() == []
    fp16 = _problems('comm.allreduce_fp16=true')
    assert len(fp16) == 1 and 'pure_nccl' in fp16[0]
    gpu_comm = _problems('comm.name=pure_nccl')
    assert len(gpu_comm) == 1 and 'needs GPUs' in gpu_comm[0]
    gpu = _problems('train.device=gpu', 'train.require_cudnn=true')
    assert any('CuPy' in p for p in gpu)


def test_mpi_banners():
    assert stack_env._mpi_vendor_version(
        'MPICH Version:      5.0.2\nMPICH Release date: ...') == ('MPICH', '5.0.2')
    assert stack_env._mpi_vendor_version(
        'HYDRA build details:\n    Version:                                 5.0.2\n') == \
        ('MPICH', '5.0.2')
    assert stack_env._mpi_vendor_version(
        'Open MPI v4.1.5, package: Debian OpenMPI, ident: 4.1.5') == ('Open MPI', '4.1.5')
    assert stack_env._mpi_vendor_version('mpiexec (OpenRTE) 4.1.5\n') == ('Open MPI', '4.1.5')
    assert stack_env._mpi_vendor_version('Intel(R) MPI Library 2021.10 for Linux*') == \
        ('Intel MPI', '2021.10')


def test_cuda_libs_without_wheels_does_nothing():
    """This venv has no nvidia-* wheels: nothing loaded, CuPy not imported by pfn15."""
    code = ('import sys, pfn15; from pfn15 import cuda_libs; '
            'print(cuda_libs.policy, len(cuda_libs.loaded), "cupy" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=child_env(), cwd=ROOT, timeout=60)
    assert out.stdout.split() == ['wheels', '0', 'False'], out.stderr


def test_cuda_libs_policy_typo_is_reported():
    r = _env(PFN15_CUDA_LIBS='sytem')
    assert r.returncode == 0, r.stderr
    assert "PFN15_CUDA_LIBS='sytem' is neither \"wheels\" nor \"system\"" in r.stdout, r.stdout


def _kernel_python():
    python = os.path.join(ROOT, '.venv-kernels', 'bin', 'python')
    if not os.path.exists(python):
        pytest.skip('.venv-kernels not built (make install-kernels)')
    return python


@pytest.mark.parametrize('policy', ['wheels', 'system'])
def test_cuda_libs_with_wheels(policy):
    """The kernel venv has NVIDIA's NVRTC and runtime wheels: CuPy 13 finds NVRTC through
    pfn15.cuda_libs (by default), and not without it (PFN15_CUDA_LIBS=system)."""
    code = ('import pfn15\nfrom pfn15 import cuda_libs\nfrom cupy.cuda import nvrtc\n'
            'print(sorted(cuda_libs.loaded))\n'
            'try:\n    print("nvrtc", nvrtc.getVersion())\n'
            'except Exception as e:\n    print("error", e)\n')
    env = dict(os.environ, PYTHONPATH=ROOT, PFN15_CUDA_LIBS=policy, PYTHONNOUSERSITE='1')
    env.pop('LD_LIBRARY_PATH', None)
    out = subprocess.run([_kernel_python(), '-c', code], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    if policy == 'wheels':
        assert "'libcudart.so.12', 'libnvrtc.so.12'" in out.stdout
        assert 'nvrtc (12, ' in out.stdout
    else:
        assert out.stdout.startswith('[]')
        assert 'libnvrtc.so.12: cannot open shared object file' in out.stdout
