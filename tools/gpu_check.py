#!/usr/bin/env python
"""The GPU path verified in one call (docs/gpus.md), with a PASS/FAIL table.

    python tools/gpu_check.py --json gpu_check.json [--device 0] [--no-bench]
    python tools/gpu_check.py --budget 540 --json gpu_check.json   # a 10-minute debug allocation
    python tools/gpu_check.py --budget 540 --dry-run               # what would run (no GPU needed)

Checks (each independent; one failing does not stop the others):

  rmsprop_warmup, lars, ...
                     one per registered optimizer with kernels of its own
                     (pfn15.optimizers.REGISTRY): its CuPy kernels (update_core_gpu)
                     vs its NumPy rule (update_core_cpu), same initial parameters and
                     the same gradients, 20 updates with the scheduled hyperparameters
                     following their schedules (alpha_sgd 0 -> 1), float32:
                     max|gpu - cpu| <= rtol * max|cpu| for every parameter and state array.
  bn_allreduce       pfn15.bn.allreduce_statistics on CuPy vs NumPy arrays, over
                     a communicator that simulates 4 ranks in this process (a
                     real one-process MPI all-reduce of device pointers needs a
                     CUDA-aware MPI; the function under test only calls
                     comm.allreduce and comm.size).
  accumulating_updater  pfn15.training.updater.AccumulatingUpdater, 4 microbatches,
                     a small BN network, 20 updates on GPU vs CPU from the same
                     parameters and data.
  train_float32 / train_mixed16
                     a short ResNet-50 run (pfn15.models.resnet50) on synthetic
                     JPEGs (pfn15.data.synthetic), on the GPU: the loss of the
                     last iterations is below that of the first ones.
  bench_b32_float32, bench_b32_mixed16, bench_b256_mixed16
                     `python -m pfn15.bench step --device N --arch resnet50` at
                     per-worker batch 32 and 256: images/s, and the PyTorch peer's
                     images/s and ratio where bench reports one. Goal: >= 0.5x
                     the peer at batch 256 with mixed16.

With --budget SECONDS the whole call (imports, CUDA start-up and the kernel
compiles of each check included) ends within SECONDS: the checks run in the
order above, most important first; one whose estimated cost (ESTIMATES below,
compiles on a cold kernel cache included) no longer fits what is left is
skipped and named, a cheaper one after it still runs; a check still running
at the budget's end is stopped (TIMEOUT) and the results so far are written.
Leave a minute of the allocation for the job's own start and the copy of
the JSON: --budget 540 in a 10-minute allocation.

Without CuPy or a GPU it prints why, writes {"status": "skipped", ...} and exits 0.
Exit status: 0 when every check that ran passed (or everything was skipped), 1 otherwise.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback

STARTED = time.monotonic()   # the budget counts from here: the imports below are in it
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('MPLBACKEND', 'Agg')

import numpy  # noqa: E402

import pfn15  # noqa: E402,F401  (pfn15._compat before Chainer)


# ---------------------------------------------------------------- helpers

def _versions():
    v = {'python': platform.python_version(), 'numpy': numpy.__version__,
         'platform': platform.platform()}
    for name in ('chainer', 'cupy', 'torch', 'mpi4py', 'setuptools'):
        try:
            v[name] = __import__(name).__version__
        except Exception as e:  # report, never fail on a missing optional package
            v[name] = 'absent (%s)' % type(e).__name__
    return v


def _gpu_or_reason(device):
    """(info dict, None) when CuPy sees GPU `device`, else (None, reason)."""
    try:
        import cupy
    except Exception as e:
        return None, 'cupy is not importable (%s: %s)' % (type(e).__name__, e)
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return None, 'CuPy finds no usable CUDA device (%s: %s)' % (type(e).__name__, e)
    if n <= device:
        return None, 'CuPy sees %d GPU(s); --device %d is not one of them' % (n, device)
    props = cupy.cuda.runtime.getDeviceProperties(device)
    name = props['name']
    info = {'gpu': name.decode() if isinstance(name, bytes) else str(name),
            'gpu_memory_gib': round(props['totalGlobalMem'] / 2 ** 30, 1),
            'cuda_runtime': cupy.cuda.runtime.runtimeGetVersion(),
            'cuda_driver': cupy.cuda.runtime.driverGetVersion()}
    import chainer.backends.cuda as ccuda
    from pfn15 import env
    info['chainer_cuda_available'] = bool(ccuda.available)
    enabled, version, reason = env.cudnn_status()
    info['chainer_cudnn_enabled'] = bool(enabled)
    info['cudnn_version'] = version
    info['cudnn_off_reason'] = reason
    if not ccuda.available:
        # Chainer rejects no CuPy version: it sets available = False when one of
        # its CuPy imports fails, and keeps that exception as _resolution_error.
        return None, ('CuPy sees the GPU but Chainer cannot use it: importing CuPy\'s '
                      'modules failed with %s' % env._one_line(
                          getattr(ccuda, '_resolution_error', 'an unknown error')))
    return info, None


def _rel_err(gpu_arr, cpu_arr):
    """max|gpu - cpu| / max|cpu| (the array's scale; 0-safe)."""
    import cupy
    g = cupy.asnumpy(gpu_arr).astype(numpy.float64)
    c = numpy.asarray(cpu_arr, dtype=numpy.float64)
    scale = max(float(numpy.abs(c).max()) if c.size else 0.0, 1e-30)
    return float(numpy.abs(g - c).max()) / scale if c.size else 0.0


def _compare(pairs, rtol):
    """pairs: [(name, gpu_array, cpu_array)] -> (ok, worst name, worst rel err); NaN fails."""
    errs = [(_rel_err(g, c), name) for name, g, c in pairs]
    bad = [(e, n) for e, n in errs if not numpy.isfinite(e)]
    worst, worst_name = bad[0] if bad else max(errs)
    return bool(not bad and worst <= rtol), worst_name, worst


# ---------------------------------------------------------------- checks

def optimizer_checks():
    """The names of the optimizers whose GPU update is checked: every registered
    optimizer with kernels of its own (pfn15.optimizers.REGISTRY)."""
    from pfn15 import optimizers
    return [e.name for e in optimizers.REGISTRY if e.kernels()]


def check_optimizer(args, name):
    """The optimizer's GPU update (its kernels) vs its CPU rule: same parameters and
    gradients, `args.updates` updates with the scheduled hyperparameters following
    their schedules over 15 epochs (alpha_sgd 0 -> 1), float32."""
    import chainer
    import cupy
    from pfn15 import config, optimizers

    entry = optimizers.entry(name)
    cfg = config.load(None, ['data.dataset=digits', 'optimizer.name=%s' % name,
                             'optimizer.weight_decay=1.0e-4'], check_paths=False)
    rng = numpy.random.RandomState(0)
    shapes = [(64, 3, 3, 3), (64,), (256, 64), (1000,), (7, 5)]
    init = [rng.randn(*s).astype(numpy.float32) * 0.1 for s in shapes]
    grads = [[rng.randn(*s).astype(numpy.float32) * 10 ** rng.uniform(-3, 0) for s in shapes]
             for _ in range(args.updates)]

    def run(xp):
        model = chainer.ChainList(*[chainer.Link() for _ in shapes])
        for link, a in zip(model, init):
            with link.init_scope():
                link.W = chainer.Parameter(xp.asarray(a.copy()))
        opt = entry.build(cfg.optimizer, model, lr=0.1)
        for i in range(args.updates):
            epoch = 15.0 * i / max(1, args.updates - 2)
            for hp, schedule in entry.scheduled.items():
                setattr(opt, hp, schedule(epoch, cfg))
            for link, g in zip(model, grads[i]):
                link.W.grad = xp.array(g)   # a copy: weight decay adds to it in place
            opt.update()
        out = {}
        for j, link in enumerate(model):
            out['param%d' % j] = link.W.array
            for k, st in sorted(link.W.update_rule.state.items()):
                out['param%d.%s' % (j, k)] = st
        return out

    cpu = run(numpy)
    with cupy.cuda.Device(args.device):
        gpu = run(cupy)
    assert all(isinstance(a, cupy.ndarray) for a in gpu.values()), 'GPU run left the GPU'
    ok, worst, err = _compare([(k, gpu[k], cpu[k]) for k in cpu], args.rtol)
    return ok, 'max rel err %.2e (%s) over %d updates, rtol %.0e' % (
        err, worst, args.updates, args.rtol), {'max_rel_err': err, 'worst': worst}


class _SimulatedComm(object):
    """allreduce = this rank's array + fixed arrays of `size - 1` simulated peers."""

    def __init__(self, size, seed):
        self.size, self.rank, self._seed = size, 0, seed

    def allreduce(self, x):
        import chainer
        xp = chainer.backend.get_array_module(x)
        rng = numpy.random.RandomState(self._seed)
        total = x.copy()
        for _ in range(self.size - 1):
            total += xp.asarray(rng.rand(*x.shape).astype(x.dtype))
        return total


def check_bn_allreduce(args):
    import chainer
    import cupy
    from pfn15 import bn as bn_module
    from pfn15.models import resnet_small

    rng = numpy.random.RandomState(1)
    x = rng.randn(16, 3, 16, 16).astype(numpy.float32)

    def run(xp):
        numpy.random.seed(0)   # Chainer's initializers draw from numpy.random
        net = resnet_small(10, 3, 1, 8, bn_decay=0.0)
        if xp is cupy:
            net.to_device(chainer.get_device('@cupy:%d' % args.device))
        with chainer.using_config('train', True):
            net(xp.asarray(x))            # BN decay 0: avg_* = this batch's statistics
        bn_module.allreduce_statistics(net, _SimulatedComm(4, seed=2))
        return {'%s.%s' % (i, a): getattr(link, a)
                for i, link in enumerate(bn_module.batch_norms(net))
                for a in ('avg_mean', 'avg_var')}

    cpu = run(numpy)
    with cupy.cuda.Device(args.device):
        gpu = run(cupy)
    ok, name, err = _compare([(k, gpu[k], cpu[k]) for k in cpu], args.rtol)
    return ok, 'max rel err %.2e (%s), %d BN arrays, 4 simulated ranks' % (
        err, name, len(cpu)), {'max_rel_err': err, 'worst': name}


def check_accumulating_updater(args):
    try:
        from pfn15.training.updater import AccumulatingUpdater
    except ImportError as e:
        return None, 'pfn15.training.updater.AccumulatingUpdater is missing (%s)' % e, {}
    import chainer
    import chainer.functions as F
    import chainer.links as L
    import cupy

    rng = numpy.random.RandomState(3)
    k, per = 4, 8
    X = rng.randn(k * per * args.updates, 32).astype(numpy.float32)
    Y = rng.randint(0, 10, len(X)).astype(numpy.int32)
    data = chainer.datasets.TupleDataset(X, Y)

    class Net(chainer.Chain):
        def __init__(self):
            super().__init__()
            with self.init_scope():
                self.l1 = L.Linear(32, 64)
                self.bn = L.BatchNormalization(64)
                self.l2 = L.Linear(64, 10)

        def forward(self, x):
            return self.l2(F.relu(self.bn(self.l1(x))))

    numpy.random.seed(0)
    template = L.Classifier(Net())
    init = {n: p.array.copy() for n, p in template.namedparams()}

    def run(device):
        model = L.Classifier(Net())
        for n, p in model.namedparams():
            p.array[...] = init[n]
        model.to_device(device)
        opt = chainer.optimizers.MomentumSGD(lr=0.05, momentum=0.9)
        opt.setup(model)
        it = chainer.iterators.SerialIterator(data, per, shuffle=False)
        up = AccumulatingUpdater(it, opt, microbatches=k, device=device)
        reporter = chainer.Reporter()   # what a Trainer provides around update()
        reporter.add_observer('main', model)
        for _ in range(args.updates):
            with reporter.scope({}):
                up.update()
        return {n: p.array for n, p in model.namedparams()}

    cpu = run(chainer.get_device('@numpy'))
    with cupy.cuda.Device(args.device):
        gpu = run(chainer.get_device('@cupy:%d' % args.device))
    ok, name, err = _compare([(n, gpu[n], cpu[n]) for n in cpu], args.rtol)
    return ok, 'max rel err %.2e (%s), %d updates x %d microbatches' % (
        err, name, args.updates, k), {'max_rel_err': err, 'worst': name}


def _synthetic_jpegs(classes, per_class, size, crop):
    """(x float32 NCHW, t int32) decoded from a synthetic JPEG tree (center crop)."""
    from PIL import Image
    from pfn15.data import synthetic
    root = tempfile.mkdtemp(prefix='pfn15-gpu-check-')
    synthetic.write_tree(root, classes, per_class, 1, size, seed=0)
    xs, ts = [], []
    names = sorted(os.listdir(os.path.join(root, 'train')))
    for label, name in enumerate(names):
        d = os.path.join(root, 'train', name)
        for f in sorted(os.listdir(d)):
            with Image.open(os.path.join(d, f)) as im:
                im = im.convert('RGB').resize((crop, crop), Image.BILINEAR)
                xs.append(numpy.asarray(im, numpy.float32).transpose(2, 0, 1))
            ts.append(label)
    x = numpy.stack(xs)
    x = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / (x.std(axis=(0, 2, 3), keepdims=True) + 1e-5)
    return x.astype(numpy.float32), numpy.asarray(ts, numpy.int32)


def check_train(args, dtype):
    import chainer
    import cupy
    from pfn15.models import Classifier, resnet50

    x, t = _synthetic_jpegs(args.train_classes, args.train_per_class, 256, 224)
    device = chainer.get_device('@cupy:%d' % args.device)
    rng = numpy.random.RandomState(0)
    numpy.random.seed(0)
    config_dtype = chainer.mixed16 if dtype == 'mixed16' else numpy.float32
    losses = []
    t0 = time.perf_counter()
    with chainer.using_config('dtype', config_dtype), cupy.cuda.Device(args.device):
        model = Classifier(resnet50(args.train_classes, 3))
        model.to_device(device)
        opt = chainer.optimizers.MomentumSGD(lr=args.train_lr, momentum=0.9)
        opt.setup(model)
        if dtype == 'mixed16':
            opt.loss_scaling()
            opt.use_fp32_update()
        in_dtype = numpy.float16 if dtype == 'mixed16' else numpy.float32
        for _ in range(args.train_iters):
            if len(losses) >= 6 and _budget_left(args) < 15:
                break   # the budget's end is near: judge on the iterations so far
            idx = rng.choice(len(x), args.train_batch, replace=False)
            xb = device.send(x[idx].astype(in_dtype))
            tb = device.send(t[idx])
            model.cleargrads()
            loss = model(xb, tb)
            loss.backward(loss_scale=getattr(opt, '_loss_scale', None))
            opt.update()
            losses.append(float(loss.array))
        cupy.cuda.Device(args.device).synchronize()
    n = max(3, len(losses) // 5)
    first, last = float(numpy.mean(losses[:n])), float(numpy.mean(losses[-n:]))
    ok = bool(numpy.all(numpy.isfinite(losses)) and last < first)
    param_dtypes = sorted({str(p.dtype) for p in model.params()})
    return ok, 'loss %.3f -> %.3f (mean of first/last %d of %d it.%s, batch %d), params %s, %.0fs' % (
        first, last, n, len(losses),
        ' of %d: the budget' % args.train_iters if len(losses) < args.train_iters else '',
        args.train_batch, '/'.join(param_dtypes),
        time.perf_counter() - t0), {
            'losses': losses, 'first_mean': first, 'last_mean': last,
            'param_dtypes': param_dtypes}


def _peer(result):
    """The PyTorch peer's images/s in a bench JSON, whatever key bench gives it."""
    for key in ('torch_img_per_s', 'pytorch_img_per_s', 'peer_img_per_s'):
        if key in result:
            return key, result[key]
    for key, value in result.items():
        if ('torch' in key or 'peer' in key) and key.endswith('img_per_s') \
                and isinstance(value, (int, float)):
            return key, value
    return None, None


def check_bench(args, batch, dtype):
    out = tempfile.mktemp(prefix='pfn15-gpu-check-bench-', suffix='.json')
    cmd = [sys.executable, '-m', 'pfn15.bench', 'step', '--arch', 'resnet50',
           '--batch', str(batch), '--size', '224', '--device', str(args.device),
           '--iters', str(args.bench_iters), '--blocks', str(args.bench_blocks),
           '--set', 'train.dtype=%s' % dtype, '--json', out]
    t0 = time.perf_counter()
    timeout = args.bench_timeout
    if args.budget is not None:
        timeout = max(1, min(timeout, int(_budget_left(args)) - 5))
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BudgetExceeded('bench step did not finish within %d s' % timeout)
    took = time.perf_counter() - t0
    if p.returncode != 0 or not os.path.exists(out):
        tail = (p.stdout + p.stderr).strip().splitlines()[-6:]
        return False, 'bench exited %d after %.0fs: %s' % (p.returncode, took, ' | '.join(tail)), \
            {'cmd': ' '.join(cmd)}
    with open(out) as f:
        r = json.load(f)
    ours = r.get('pfn15_img_per_s')
    key, peer = _peer(r)
    metrics = {'cmd': ' '.join(cmd), 'pfn15_img_per_s': ours,
               'bare_img_per_s': r.get('bare_img_per_s'), 'peer_key': key,
               'torch_img_per_s': peer, 'bench': r}
    if peer:
        ratio = ours / peer
        metrics['ratio_vs_torch'] = ratio
        goal = batch == 256 and dtype == 'mixed16'
        ok = ratio >= 0.5 if goal else True
        return ok, '%.1f img/s, PyTorch peer %.1f img/s, ratio %.2f%s' % (
            ours, peer, ratio, ' (goal >= 0.5)' if goal else ''), metrics
    return False, '%.1f img/s (bare Chainer %.1f); bench reported no PyTorch peer' % (
        ours or 0.0, r.get('bare_img_per_s') or 0.0), metrics


# ---------------------------------------------------------------- the budget

# Seconds each check costs on a cold kernel cache (CuPy's NVRTC compiles, cuDNN's
# algorithm search, a bench subprocess's own imports), with the default sizes;
# train and bench scale with their iteration counts. Estimates, generous on
# purpose (a skipped check is named, an overrun loses the allocation); a
# previous run's JSON gives measured ones: --estimates gpu_check.json.
ESTIMATES = {
    **dict.fromkeys(optimizer_checks(), 30),   # one per registered optimizer's kernels
    'accumulating_updater': 25, 'bn_allreduce': 25,
    'train_float32': 120, 'train_mixed16': 140,
    'bench_b256_mixed16': 200, 'bench_b32_float32': 150, 'bench_b32_mixed16': 150,
}
# GPU start-up before the first check (CUDA context, cuDNN, Chainer's CuPy imports).
STARTUP_S = 20
# Kept at the end: the summary, the JSON.
RESERVE_S = 5
# Most important first: the recipe's kernels against their CPU reference, then
# training on the GPU, then speed (the goal: batch 256, mixed16).
ORDER = tuple(optimizer_checks()) + (
    'accumulating_updater', 'bn_allreduce', 'train_float32',
    'train_mixed16', 'bench_b256_mixed16', 'bench_b32_float32', 'bench_b32_mixed16')


class BudgetExceeded(Exception):
    """The budget ran out while a check was running."""


def load_estimates(path):
    """{check: seconds} measured by an earlier run's JSON (1.25 x, for a colder cache)."""
    with open(path) as f:
        report = json.load(f)
    return {c['name']: 1.25 * c['seconds'] for c in report.get('checks', [])
            if c.get('status') in ('PASS', 'FAIL') and c['name'] in ESTIMATES}


def estimate(name, args):
    measured = getattr(args, 'measured', None) or {}
    if name in measured:
        return measured[name]
    cost = ESTIMATES[name]
    if name.startswith('train_'):   # ~2/3 compiles and start-up, the rest iterations
        cost = cost * (0.65 + 0.35 * args.train_iters / 30.0)
    elif name.startswith('bench_'):
        cost = cost * (0.6 + 0.4 * args.bench_iters / 5.0)
    return cost


def _budget_left(args, now=None):
    if args.budget is None:
        return float('inf')
    return args.budget - ((time.monotonic() if now is None else now) - STARTED)


def fits(name, args, left):
    """(True, '') if check `name` fits in `left` seconds, else (False, why)."""
    need = estimate(name, args) + RESERVE_S
    if need <= left:
        return True, ''
    return False, 'budget: needs ~%.0f s, %.0f s left' % (need, max(0.0, left))


def _on_alarm(signum, frame):
    raise BudgetExceeded('the budget ran out during the check')


def run_checks(checks, args, report, out=print):
    """Run [(name, fn)] in order within args.budget; each entry goes into report['checks']."""
    budgeted = args.budget is not None
    if budgeted:
        signal.signal(signal.SIGALRM, _on_alarm)
    spent = False   # a check ran into the budget's end: nothing else starts
    for name, fn in checks:
        left = _budget_left(args)
        fit, why = fits(name, args, left) if budgeted else (True, '')
        if spent:
            fit, why = False, 'budget: spent by an earlier check that ran to its end'
        if fit:
            entry = _run_one(name, fn, args, left)
        else:
            entry = {'name': name, 'status': 'SKIP', 'detail': why, 'seconds': 0.0,
                     'metrics': {'skipped_for_budget': True, 'estimate_s': estimate(name, args)}}
        spent = spent or entry['status'] == 'TIMEOUT'
        report['checks'].append(entry)
        out('  %-22s %-7s %s' % (name, entry['status'], entry['detail']))
        sys.stdout.flush()
        _write(args.json, report)   # partial results survive a later crash or timeout
    return report


def _run_one(name, fn, args, left):
    t0 = time.perf_counter()
    if args.budget is not None:   # a hard stop for a check that overruns its estimate
        signal.alarm(max(1, int(left - RESERVE_S)))
    try:
        ok, detail, metrics = fn()
        status = 'SKIP' if ok is None else ('PASS' if ok else 'FAIL')
    except BudgetExceeded as e:
        status, detail, metrics = 'TIMEOUT', '%s (budget %g s)' % (e, args.budget), {
            'skipped_for_budget': True}
    except Exception as e:
        status, detail, metrics = 'FAIL', '%s: %s' % (type(e).__name__, e), {
            'traceback': traceback.format_exc()}
    finally:
        if args.budget is not None:
            signal.alarm(0)
    return {'name': name, 'status': status, 'detail': detail,
            'seconds': round(time.perf_counter() - t0, 1), 'metrics': metrics}


def dry_run(args, names):
    """What a budgeted call would run, from the estimates alone (no GPU needed)."""
    left = (args.budget if args.budget is not None else float('inf')) - STARTUP_S
    plan = []
    for name in names:
        ok, why = fits(name, args, left)
        if ok:
            left -= estimate(name, args)
        plan.append((name, ok, estimate(name, args), why))
    return plan


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--json', help='write the results here')
    p.add_argument('--device', type=int, default=0)
    p.add_argument('--updates', type=int, default=20)
    p.add_argument('--rtol', type=float, default=1e-5)
    p.add_argument('--train-iters', type=int, default=30)
    p.add_argument('--train-batch', type=int, default=32)
    p.add_argument('--train-classes', type=int, default=4)
    p.add_argument('--train-per-class', type=int, default=16)
    p.add_argument('--train-lr', type=float, default=0.05)
    p.add_argument('--no-train', action='store_true', help='skip the ResNet-50 runs')
    p.add_argument('--no-bench', action='store_true', help='skip python -m pfn15.bench step')
    p.add_argument('--bench-iters', type=int, default=5)
    p.add_argument('--bench-blocks', type=int, default=3)
    p.add_argument('--bench-timeout', type=int, default=600)
    p.add_argument('--only', action='append', default=[], metavar='NAME',
                   help='run only these checks (repeatable)')
    p.add_argument('--budget', type=float, metavar='SECONDS',
                   help='finish within SECONDS, compiles included; skips (and names) what '
                        'does not fit, most important checks first')
    p.add_argument('--estimates', metavar='GPU_CHECK.json',
                   help="an earlier run's JSON: its measured seconds replace the estimates")
    p.add_argument('--dry-run', action='store_true',
                   help='print which checks the budget lets run, from the estimates; no GPU')
    args = p.parse_args(argv)
    if args.budget is not None and args.budget <= 0:
        p.error('--budget must be > 0 seconds')
    args.measured = {}
    if args.estimates:
        try:
            args.measured = load_estimates(args.estimates)
        except (OSError, ValueError, KeyError, TypeError) as e:
            p.error('--estimates %s: not a gpu_check JSON (%s)' % (args.estimates, e))
    unknown = sorted(set(args.only) - set(ORDER))
    if unknown:
        p.error('--only %s: no such check (checks: %s)' % (', '.join(unknown), ', '.join(ORDER)))
    return args


def selected(args):
    names = [n for n in ORDER
             if not (args.no_train and n.startswith('train_'))
             and not (args.no_bench and n.startswith('bench_'))]
    return [n for n in names if n in args.only] if args.only else names


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.dry_run:
        print('gpu_check: dry run, budget %s: estimates on a cold kernel cache, %d s of GPU '
              'start-up first' % ('%g s' % args.budget if args.budget else 'none', STARTUP_S))
        for name, ok, cost, why in dry_run(args, selected(args)):
            print('  %-22s %-4s %5s s%s' % (name, 'RUN' if ok else 'SKIP', '~%.0f' % cost,
                                               '  (%s)' % why if why else ''))
        return 0
    report = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'versions': _versions(), 'rtol': args.rtol, 'updates': args.updates,
              'budget_s': args.budget, 'checks': []}
    info, reason = _gpu_or_reason(args.device)
    if info is None:
        report.update(status='skipped', reason=reason)
        print('gpu_check: SKIPPED: %s' % reason)
        print('  (%s)' % ', '.join('%s %s' % kv for kv in sorted(report['versions'].items())
                                   if kv[0] != 'platform'))
        _write(args.json, report)
        return 0
    report['gpu'] = info
    print('gpu_check: %s (%s GiB), CUDA runtime %s, driver %s, cuDNN in Chainer: %s'
          % (info['gpu'], info['gpu_memory_gib'], info['cuda_runtime'], info['cuda_driver'],
             'on (%s)' % info['cudnn_version'] if info['chainer_cudnn_enabled'] else
             'OFF, convolutions run as im2col + GEMM: %s' % info['cudnn_off_reason']))
    print('  %s' % ', '.join('%s %s' % kv for kv in sorted(report['versions'].items())
                             if kv[0] != 'platform'))

    fns = {name: (lambda name=name: check_optimizer(args, name)) for name in optimizer_checks()}
    fns.update({
        'accumulating_updater': lambda: check_accumulating_updater(args),
        'bn_allreduce': lambda: check_bn_allreduce(args),
        'train_float32': lambda: check_train(args, 'float32'),
        'train_mixed16': lambda: check_train(args, 'mixed16'),
        'bench_b256_mixed16': lambda: check_bench(args, 256, 'mixed16'),
        'bench_b32_float32': lambda: check_bench(args, 32, 'float32'),
        'bench_b32_mixed16': lambda: check_bench(args, 32, 'mixed16'),
    })
    run_checks([(n, fns[n]) for n in selected(args)], args, report)

    failed = [c['name'] for c in report['checks'] if c['status'] in ('FAIL', 'TIMEOUT')]
    skipped = [c['name'] for c in report['checks']
               if c.get('metrics', {}).get('skipped_for_budget')]
    report['status'] = 'fail' if failed else 'pass'
    report['skipped_for_budget'] = skipped
    print()
    print('  %-22s %-6s %8s  %s' % ('check', 'result', 'seconds', 'detail'))
    for c in report['checks']:
        print('  %-22s %-6s %8.1f  %s' % (c['name'], c['status'], c['seconds'], c['detail']))
    print('gpu_check: %s%s in %.0f s%s' % (
        report['status'].upper(), (' (%s)' % ', '.join(failed)) if failed else '',
        time.monotonic() - STARTED,
        '; not run within the budget of %g s: %s' % (args.budget, ', '.join(skipped))
        if skipped else ''))
    _write(args.json, report)
    return 1 if failed else 0


def _write(path, report):
    if not path:
        return
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(report, f, indent=2, default=str)
    os.replace(tmp, path)


if __name__ == '__main__':
    sys.exit(main())
