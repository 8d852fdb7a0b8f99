"""Where a CPU ResNet-50 step spends its time, per Chainer function (TimerHook),
with Chainer's functions, pfn15's and oneDNN's, side by side.

    python tools/cpu_profile.py [--batch 16] [--size 160] [--steps 2]
        [--functions chainer,pfn15,onednn,onednn-bf16]

One forward/backward/MomentumSGD step of the same model (bench step's) per
setting of model.cpu_functions, after one untimed step, averaged over --steps.
Chainer's TimerHook times each function's forward and backward; a backward
that applies other functions (Convolution2DFunction's applies
Convolution2DGradW and Deconvolution2DFunction) is counted in both, so this
tool's ExclusiveTimerHook (TimerHook with nested time subtracted) reports
each function's own time, forward and backward apart.
"""
import argparse
import collections
import time

import pfn15  # noqa: F401  (OpenBLAS kernel choice before NumPy loads)
import numpy

import chainer
import chainer.links as L
from chainer.function_hooks import TimerHook

from pfn15 import cpu, models


class ExclusiveTimerHook(TimerHook):
    """TimerHook's clock; each call's time minus the calls nested in it, keyed by
    (function, 'forward' | 'backward')."""

    name = 'ExclusiveTimerHook'

    def __init__(self):
        super().__init__()
        self.totals = collections.defaultdict(float)
        self._frames = []

    def forward_preprocess(self, function, in_data):
        self._frames.append([time.perf_counter(), 0.0, 'forward'])

    def backward_preprocess(self, function, in_data, out_grad):
        self._frames.append([time.perf_counter(), 0.0, 'backward'])

    def forward_postprocess(self, function, in_data):
        self._close(function)

    def backward_postprocess(self, function, in_data, out_grad):
        self._close(function)

    def _close(self, function):
        start, nested, phase = self._frames.pop()
        elapsed = time.perf_counter() - start
        self.totals[(function.label, phase)] += elapsed - nested
        if self._frames:
            self._frames[-1][1] += elapsed


def profile(cpu_functions, batch, size, steps, classes=10):
    # The rank's threads as training sets them: pfn15's functions split the products.
    # 'onednn-bf16': oneDNN in bfloat16 (train.dtype=mixed16 on CPU).
    bf16 = cpu_functions == 'onednn-bf16'
    cpu_functions = 'onednn' if bf16 else cpu_functions
    cpu.set_threads(0, 1, split_products=cpu_functions == 'pfn15')
    numpy.random.seed(0)
    model = L.Classifier(models.resnet50(classes, 3, cpu_functions=cpu_functions,
                                         cpu_bf16=bf16))
    opt = chainer.optimizers.MomentumSGD(0.01)
    opt.setup(model)
    x = numpy.random.standard_normal((batch, 3, size, size)).astype(numpy.float32)
    t = numpy.random.randint(0, classes, batch).astype(numpy.int32)

    def step():
        model.cleargrads()
        loss = model(x, t)
        loss.backward()
        opt.update()
    step()
    hook = ExclusiveTimerHook()
    t0 = time.perf_counter()
    with hook:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - t0) / steps
    return wall, {k: v / steps for k, v in hook.totals.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--size', type=int, default=160)
    ap.add_argument('--steps', type=int, default=2)
    ap.add_argument('--functions', default='chainer,pfn15,onednn',
                    help='comma-separated: chainer, pfn15, onednn, onednn-bf16')
    args = ap.parse_args()
    cpu.keep_freed_memory()
    runs = {k: profile(k, args.batch, args.size, args.steps)
            for k in args.functions.split(',')}
    print('ResNet-50, batch %d, %dx%d, seconds per step (TimerHook; forward + backward of '
          'each function)' % (args.batch, args.size, args.size))
    for k, (wall, totals) in runs.items():
        print('\n%s functions: step %.3f s wall, %.3f s in functions' % (k, wall, sum(totals.values())))
        for (name, phase), sec in sorted(totals.items(), key=lambda kv: -kv[1]):
            if sec >= 0.002:
                print('  %-44s %7.3f s %5.1f%%' % ('%s %s' % (name, phase), sec,
                                                   100 * sec / wall))


if __name__ == '__main__':
    main()
