"""What the tests share: launching real MPI jobs (mpiexec from the venv's PyPI
mpich, else the PATH) and single processes, reading their outputs, comparing
runs, the small JPEG trees and packs that a unit/ file and its mpi/ runs both
use, the layer shapes of the models, and optimizer steps on random gradients.

Importable as `helpers` from every test folder (pytest.ini: pythonpath).
Standard library at import time: NumPy, Chainer and pfn15's models load only
when a function needs them, so importing this module changes nothing about
the order in which a test module loads them.
"""
import functools
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


# ---------------------------------------------------------------- launching

def mpiexec_path():
    here = os.path.join(BIN, 'mpiexec')
    return here if os.path.exists(here) else shutil.which('mpiexec')


def child_env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1',
               PYTHONUNBUFFERED='1', PATH=BIN + os.pathsep + env.get('PATH', ''))
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    return env


def mpirun(n, args, timeout=300, **kw):
    """Run `python ARGS...` on n real MPI ranks; returns CompletedProcess (text)."""
    exe = mpiexec_path()
    if exe is None:
        pytest.fail('mpiexec not found: install the mpich extra (pip install -e .[mpich])')
    cmd = [exe, '-n', str(n), sys.executable] + list(args)
    return subprocess.run(cmd, cwd=kw.pop('cwd', ROOT), env=kw.pop("env", child_env()),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, **kw)


def train(n, config, *overrides, timeout=600):
    return mpirun(n, ['-m', 'pfn15.train', config] + list(overrides), timeout=timeout)


def run(*args, env=None, timeout=120):
    """Run `python ARGS...` here as one process; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable] + list(args), cwd=ROOT, env=env or child_env(),
                          capture_output=True, text=True, timeout=timeout)


def mpi_script(name):
    """A rank program of tests/mpi/programs/, to run with mpirun (or alone, as one rank)."""
    return os.path.join(ROOT, 'tests', 'mpi', 'programs', name)


def rank_pids(marker):
    """PIDs of the training ranks whose command line contains `marker`."""
    pids = []
    for d in glob.glob('/proc/[0-9]*'):
        try:
            cmd = open(d + '/cmdline', 'rb').read().replace(b'\0', b' ').decode()
        except OSError:
            continue
        if 'pfn15.train' in cmd and marker in cmd and 'mpiexec' not in cmd:
            pids.append(int(d.rsplit('/', 1)[1]))
    return pids


# ---------------------------------------------------------------- a run's outputs

def assert_one_line(r, status, *needles, prog='pfn15'):
    """Exit `status`, exactly one error line (from rank 0), holding every needle; no traceback."""
    text = r.stdout + r.stderr
    assert r.returncode == status, text
    assert 'Traceback' not in text, text
    lines = [line for line in r.stderr.splitlines() if line.startswith(prog + ': error:')]
    assert len(lines) == 1, text
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def read_summary(out):
    with open(os.path.join(out, 'summary.json')) as f:
        return json.load(f)


METRICS = ('val_top1', 'val_top5', 'val_loss', 'train_loss', 'train_top1', 'epochs',
           'iterations')
# Wall-clock figures a checkpoint also holds: the only arrays allowed to differ.
TIMES = ('updater/update_seconds', '_snapshot_elapsed_time')


def state(out):
    """The newest checkpoint's numeric arrays: model (parameters, BN statistics),
    optimizer state (per-parameter slots, t), iterator and updater counters."""
    import numpy
    newest = sorted(glob.glob(os.path.join(out, 'checkpoints', 'iter_*.npz')))[-1]
    with numpy.load(newest, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if f[k].dtype.kind in 'fiub' and k not in TIMES}


def assert_same_bits(a, b):
    """Every array equal bit for bit (NaNs and signed zeros included)."""
    assert a.keys() == b.keys()
    assert sum('avg_mean' in k for k in a) > 5             # BN statistics are in
    assert sum('optimizer:main/predictor' in k for k in a) > 20   # optimizer slots too
    differ = [k for k in a if a[k].dtype != b[k].dtype or a[k].tobytes() != b[k].tobytes()]
    assert not differ, '%d of %d arrays differ: %s' % (len(differ), len(a), differ[:6])


def assert_same_metrics(sa, sb):
    for key in METRICS:
        assert sb.get(key) == sa.get(key), key           # floats, exactly


# ---------------------------------------------------------------- JPEG trees and packs

def jpeg_files(root, split='train'):
    """The JPEG files of a class-folder tree's split, sorted."""
    return sorted(glob.glob(os.path.join(root, split, '*', '*.JPEG')))


def ilsvrc_tree(root, classes=3, train_per_class=4, val_per_class=2, size=40):
    """A small tree in the ILSVRC2012 layout; returns [(val file name, wnid)] in val order."""
    import numpy
    from pfn15.data import synthetic
    synthetic.write_tree(root, classes, train_per_class, val_per_class, size)
    names = sorted(os.listdir(os.path.join(root, 'train')))
    # wnid-like folder names (sorted order = label order, as ImageNet's).
    wnids = ['n%08d' % (1440764 + 997 * c) for c in range(classes)]
    for name, wnid in zip(names, wnids):
        os.rename(os.path.join(root, 'train', name), os.path.join(root, 'train', wnid))
    # Flatten val/: the images interleaved across classes, as the real val/ is.
    val = os.path.join(root, 'val')
    files = []
    for name, wnid in zip(names, wnids):
        for f in sorted(os.listdir(os.path.join(val, name))):
            files.append((os.path.join(val, name, f), wnid))
    rng = numpy.random.RandomState(0)
    order = rng.permutation(len(files))
    labels = []
    for i, k in enumerate(order, 1):
        path, wnid = files[k]
        flat = 'ILSVRC2012_val_%08d.JPEG' % i
        os.rename(path, os.path.join(val, flat))
        labels.append((flat, wnid))
    for name in names:
        os.rmdir(os.path.join(val, name))
    return labels


def write_kaggle(path, labels):
    """`labels` ([(val file name, wnid)]) as Kaggle's LOC_val_solution.csv."""
    with open(path, 'w') as f:
        f.write('ImageId,PredictionString\n')
        for flat, wnid in reversed(labels):      # Kaggle's rows are not sorted
            f.write('%s,%s 10 12 30 33 %s 1 2 20 21 \n' % (flat[:-5], wnid, wnid))


def data_cli(*args):
    """Run `python -m pfn15.data ARGS...` here; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, '-m', 'pfn15.data'] + list(args), cwd=ROOT,
                          env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=300)


PACK_SHARD_MB = 0.02     # ~20 KB shards: several per split on a tiny tree


def pack_source(root):
    """The tree the packed-format tests pack: 3 classes of 48-px JPEGs, 8 train and 3 val each."""
    from pfn15.data import synthetic
    synthetic.write_tree(root, 3, 8, 3, 48)
    return root


def write_pack(src, out):
    """pack_source's tree `src` packed into `out` (PACK_SHARD_MB shards, 2 workers)."""
    r = data_cli('pack', src, out, '--shard-mb', str(PACK_SHARD_MB), '--workers', '2')
    assert r.returncode == 0, r.stderr
    assert 'packed 24 train + 9 val images (3 classes' in r.stdout
    # Not a terminal: plain progress lines, not a bar of carriage returns.
    assert '\r' not in r.stdout and 'pack: 33/33 images (100%)' in r.stdout
    return out


# ---------------------------------------------------------------- the models' layer shapes

def _convbn_links():
    from pfn15 import models
    from pfn15.models.resnet import ConvBN
    nets = [models.resnet50(10, 3), models.resnet50(10, 1),
            models.resnet_small(10, 3), models.resnet_small(10, 1, 1, 8)]
    for net in nets:
        for link in net.links():
            if isinstance(link, ConvBN):
                yield link


@functools.lru_cache(maxsize=None)
def conv_shapes():
    """(in channels, out channels, kernel, stride, pad) of every convolution of
    ResNet-50 (3- and 1-channel input), the default small ResNet and the demo's."""
    seen = set()
    for cb in _convbn_links():
        W = cb.conv.W
        key = (W.shape[1], W.shape[0], W.shape[2], cb.conv.stride[0], cb.conv.pad[0])
        seen.add(key)
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def bn_channels():
    """The channel counts of the same models' batch normalizations."""
    return sorted({cb.bn.gamma.shape[0] for cb in _convbn_links()})


def image_size(k):
    """A small image side for a k x k kernel: stride and pad behave as at full size."""
    return 9 if k >= 7 else 5


def scaled(rng, shape, dtype, scale=1.0):
    """Standard normal values times `scale`, as `dtype`."""
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ---------------------------------------------------------------- optimizers

def update_with_random_grads(opt, model, steps, seed=1):
    """`steps` updates of `opt` on float32 standard normal gradients (one generator
    over all of them); the parameters afterwards, copied."""
    import numpy
    rng = numpy.random.default_rng(seed)
    for _ in range(steps):
        for p in model.params():
            p.grad = rng.standard_normal(p.shape).astype(numpy.float32)
        opt.update()
    return [p.array.copy() for p in model.params()]
