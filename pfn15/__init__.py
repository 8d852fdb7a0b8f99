"""pfn15: the 15-minute ImageNet ResNet-50 recipe (Akiba et al. 2017) in Chainer/ChainerMN."""
from pfn15 import blas_kernel; blas_kernel.choose()  # noqa: E702,I001  (before NumPy loads)
from pfn15 import _compat  # noqa: F401  (must run before anything imports Chainer)
from pfn15 import cuda_libs  # noqa: F401,E402  (pip's CUDA libraries, before CuPy loads)

__version__ = '0.1.0'
