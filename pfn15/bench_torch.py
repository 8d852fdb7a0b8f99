"""The PyTorch ResNet-50 peer that `python -m pfn15.bench step` measures pfn15 against.

Why: pfn15's Chainer ResNet-50 iteration is only fast or slow next to a plain,
well-tuned PyTorch loop on the same device, so bench reports both images/s,
measured in the same command, and their ratio. Goal: Chainer >= 0.5x this peer at per-worker batch
256 with mixed precision on a GPU (tools/gpu_check.py reads `torch_img_per_s`
from bench's JSON).

The peer is the usual fast PyTorch recipe: ResNet-50 (torchvision's, or the
equivalent v1.5 network below when torchvision cannot be imported), SGD with
momentum and weight decay, cross-entropy, one fixed random batch kept on the
device, channels-last memory format, cuDNN autotuning, and automatic mixed
precision (float16 autocast + a gradient scaler) on CUDA.

PyTorch is not a dependency of pfn15: torch is imported inside the functions
only. Without it (or without a usable CUDA device for a GPU id) `run_peer`
returns {'status': 'skipped', 'reason': ...}; an error while running returns
{'status': 'error', 'reason': ...}; neither raises.

Mixed precision on CPU: `amp=None` (the default) means float16 AMP on CUDA and
plain float32 on CPU. `amp=True` on CPU asks for bfloat16 autocast (no scaler).

The result's keys `device`, `peak_memory_mb`, `peak_memory_what` and `status`
have the same names as some of bench step's own keys: store the dict under a
key of its own (and copy `torch_img_per_s` up) rather than merging it.

    python -m pfn15.bench_torch --batch 256 --size 224 --device 0 --json peer.json
"""
import argparse
import contextlib
import gc
import json
import math
import resource
import statistics
import sys
import time

KEYS = ('torch_img_per_s', 'torch_blocks_img_per_s', 'torch_losses', 'torch_version',
        'torchvision_version', 'model_source', 'param_count', 'amp', 'amp_dtype',
        'channels_last', 'device', 'gpu', 'threads', 'peak_memory_mb', 'peak_memory_what')


def available():
    """(True, 'torch X.Y') when torch imports, else (False, why)."""
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install
        return False, 'torch is not importable (%s: %s)' % (type(e).__name__, e)
    return True, 'torch %s' % torch.__version__


def _torchvision():
    """(torchvision module or None, why not)."""
    try:
        import torchvision
        import torchvision.models  # noqa: F401
        return torchvision, None
    except Exception as e:  # absent, or a build for another torch (its C ops fail to load)
        return None, '%s: %s' % (type(e).__name__, str(e).splitlines()[0] if str(e) else '')


def resnet50_fallback(classes=1000, in_channels=3):
    """ResNet-50 v1.5 (stride 2 in the 3x3 conv) in torch.nn, laid out and initialised
    like torchvision.models.resnet50(weights=None): 25,557,032 parameters for 1000
    classes, the same state_dict names and shapes."""
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = width * 4
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            h = self.relu(self.bn1(self.conv1(x)))
            h = self.relu(self.bn2(self.conv2(h)))
            h = self.bn3(self.conv3(h))
            return self.relu(h + (x if self.downsample is None else self.downsample(x)))

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = 64
            for i, (width, blocks, stride) in enumerate(
                    ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))):
                layers = []
                for j in range(blocks):
                    layers.append(Bottleneck(cin, width, stride if j == 0 else 1))
                    cin = width * 4
                setattr(self, 'layer%d' % (i + 1), nn.Sequential(*layers))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet50()


def _build_model(classes, in_channels):
    """(model, source, torchvision version or None)."""
    tv, why = _torchvision()
    if tv is not None and in_channels == 3:
        return tv.models.resnet50(weights=None, num_classes=classes), 'torchvision', \
            tv.__version__
    source = 'pfn15.bench_torch.resnet50_fallback (torchvision: %s)' % (
        why or 'in_channels=%d' % in_channels)
    return resnet50_fallback(classes, in_channels), source, tv and tv.__version__


def _device_str(device):
    """'cpu', an int GPU id, or their string forms -> 'cpu' or 'cuda:N'."""
    if device is None or str(device).lower() == 'cpu' or str(device) == '-1':
        return 'cpu'
    return 'cuda:%d' % int(device)


def _skipped(reason, **extra):
    r = dict.fromkeys(KEYS)
    r.update(extra, status='skipped', reason=reason)
    return r


def _error(e, **extra):
    """The 'error' dict of a peer that failed with exception `e`."""
    r = _skipped('%s: %s' % (type(e).__name__, str(e).strip()[:500]), **extra)
    r['status'] = 'error'
    return r


class _Session(object):
    """A built peer: step() one training step, sync(), result(rates) the dict.
    The model and batch live as long as the session (bench step on CPU keeps it
    to interleave the peer's blocks with its own)."""

    def __init__(self, torch, dev, amp, amp_dtype, fmt, batch, size, channels_last, classes,
                 in_channels, lr, momentum, weight_decay, seed):
        self.torch, self.dev, self.cuda = torch, dev, dev != 'cpu'
        self.batch, self.size, self.classes, self.in_channels = batch, size, classes, in_channels
        self.amp, self.amp_dtype, self.channels_last = amp, amp_dtype, channels_last
        torch.manual_seed(seed)
        model, self.source, self.tv_version = _build_model(classes, in_channels)
        self.model = model = model.to(dev, memory_format=fmt).train()
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                              weight_decay=weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, in_channels, size, size, generator=gen)
        t = torch.randint(0, classes, (batch,), generator=gen)
        x, t = x.to(dev).contiguous(memory_format=fmt), t.to(dev)
        if self.cuda:
            torch.cuda.set_device(dev)
            torch.backends.cudnn.benchmark = True
            # torch.amp.GradScaler('cuda') since torch 2.3; torch.cuda.amp's before.
            scaler_cls = getattr(getattr(torch, 'amp', None), 'GradScaler', None)
            scaler = (scaler_cls('cuda') if scaler_cls else torch.cuda.amp.GradScaler()) \
                if amp else None
            torch.cuda.reset_peak_memory_stats(dev)
        else:
            scaler = None
        autocast = (lambda: torch.autocast(device_type=dev.split(':')[0], dtype=amp_dtype)) \
            if amp else contextlib.nullcontext
        # detached device tensors: reading them each step would synchronise
        self.losses = losses = []

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(x), t)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            losses.append(loss.detach())
        self.step = step

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)

    def result(self, rates, iters, blocks, warmup):
        torch, dev = self.torch, self.dev
        if self.cuda:
            peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20
            what = 'torch.cuda.max_memory_allocated (GPU, tensors only, not the caching ' \
                   'allocator\'s reserve)'
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            what = 'max resident set size of the whole process (ru_maxrss)'
        return {
            'status': 'ok',
            'torch_img_per_s': statistics.median(rates) if rates else None,
            'torch_blocks_img_per_s': rates,
            'torch_losses': [float(v) for v in self.losses],
            'torch_version': torch.__version__, 'torchvision_version': self.tv_version,
            'model_source': self.source,
            'param_count': int(sum(p.numel() for p in self.model.parameters())),
            'amp': self.amp,
            'amp_dtype': str(self.amp_dtype).replace('torch.', '') if self.amp else None,
            'channels_last': bool(self.channels_last), 'device': dev,
            'gpu': torch.cuda.get_device_name(dev) if self.cuda else None,
            'threads': torch.get_num_threads(),
            'batch': self.batch, 'size': self.size, 'iters': iters, 'blocks': blocks,
            'warmup': warmup, 'classes': self.classes, 'in_channels': self.in_channels,
            'peak_memory_mb': peak, 'peak_memory_what': what,
        }


def _measure(torch, dev, amp, amp_dtype, fmt, batch, size, iters, blocks, warmup,
             channels_last, classes, in_channels, lr, momentum, weight_decay, seed):
    """run_peer's loop, in a frame of its own: the model and batch are freed on return."""
    peer = _Session(torch, dev, amp, amp_dtype, fmt, batch, size, channels_last, classes,
                    in_channels, lr, momentum, weight_decay, seed)
    for _ in range(warmup):   # allocations, cuDNN autotuning, the scaler's first steps
        peer.step()
    rates = []
    for _ in range(blocks):
        peer.sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            peer.step()
        peer.sync()
        rates.append(batch * iters / (time.perf_counter() - t0))
    return peer.result(rates, iters, blocks, warmup)


def cpu_session(batch, size, classes=1000, in_channels=3, lr=0.1, momentum=0.9,
                weight_decay=1e-4, seed=0, channels_last=True, amp=False):
    """A CPU peer to time block by block (`step()`, then `result(rates, iters, blocks,
    warmup)`), or the 'skipped' dict when torch is not importable."""
    ok, why = available()
    if not ok:
        return _skipped(why, device='cpu')
    import torch
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    # amp: torch.autocast('cpu', dtype=torch.bfloat16), the peer of pfn15's CPU bf16.
    try:
        return _Session(torch, 'cpu', bool(amp), torch.bfloat16 if amp else None, fmt, batch,
                        size, channels_last, classes,
                        in_channels, lr, momentum, weight_decay, seed)
    except Exception as e:  # a torch that imports but lacks a part (sympy for its optimizers)
        return _error(e, device='cpu', torch_version=torch.__version__)


def run_peer(batch, size, device, iters, blocks, warmup, amp=None, channels_last=True,
             classes=1000, in_channels=3, lr=0.1, momentum=0.9, weight_decay=1e-4, seed=0):
    """Time `blocks` blocks of `iters` training steps after `warmup` untimed ones.

    device: 'cpu' or a GPU id (int or digit string). amp: None = float16 AMP on
    CUDA, off on CPU; True on CPU = bfloat16 autocast. Returns a dict: status
    'ok' with the KEYS above ('torch_img_per_s' is the median over blocks of
    batch * iters / seconds; 'torch_losses' is the loss of every step, warm-up
    included), or status 'skipped' / 'error' with 'reason' and those keys None.
    """
    ok, why = available()
    if not ok:
        return _skipped(why, device=_device_str(device))
    import torch
    dev = _device_str(device)
    cuda = dev != 'cpu'
    if cuda:
        if not torch.cuda.is_available():
            return _skipped('torch %s sees no CUDA device (torch.version.cuda=%s)' % (
                torch.__version__, torch.version.cuda), device=dev,
                torch_version=torch.__version__)
        if int(device) >= torch.cuda.device_count():
            return _skipped('torch sees %d GPU(s); device %s is not one of them' % (
                torch.cuda.device_count(), device), device=dev, torch_version=torch.__version__)
    amp = cuda if amp is None else bool(amp)
    amp_dtype = (torch.float16 if cuda else torch.bfloat16) if amp else None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    cudnn_benchmark = torch.backends.cudnn.benchmark
    try:
        return _measure(torch, dev, amp, amp_dtype, fmt, batch, size, iters, blocks, warmup,
                        channels_last, classes, in_channels, lr, momentum, weight_decay, seed)
    except Exception as e:  # e.g. CUDA out of memory: report it, keep bench's own figures
        return _error(e, device=dev, torch_version=torch.__version__)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        if cuda:   # hand the peer's cached blocks back for the Chainer/CuPy run
            gc.collect()
            torch.cuda.empty_cache()


def print_peer(r, ours=None):
    """One line; with `ours` (pfn15's images/s) also the ratio ours/peer."""
    if r.get('status') != 'ok':
        print('PyTorch peer: %s (%s)' % (r.get('status'), r.get('reason')))
        return
    rate = r['torch_img_per_s']
    line = 'PyTorch peer: %.2f images/s (torch %s, %s, %s, %s, median of %d blocks x %d%s), ' \
           'peak %.0f MB' % (
               rate, r['torch_version'], r['device'],
               'AMP %s' % r['amp_dtype'] if r['amp'] else 'float32',
               'channels-last' if r['channels_last'] else 'NCHW', r['blocks'], r['iters'],
               ', interleaved with (a) and (b)' if r.get('interleaved') else '',
               r['peak_memory_mb'])
    if ours is not None and rate and math.isfinite(rate):
        line += '; pfn15/peer %.3f' % (ours / rate)
    print(line)


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m pfn15.bench_torch',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--device', default='cpu', help="'cpu' or a GPU id")
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--blocks', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--classes', type=int, default=1000)
    p.add_argument('--amp', choices=('auto', 'on', 'off'), default='auto',
                   help='auto: float16 AMP on CUDA, float32 on CPU; on: bfloat16 on CPU')
    p.add_argument('--no-channels-last', action='store_true')
    p.add_argument('--json')
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    r = run_peer(args.batch, args.size, args.device, args.iters, args.blocks, args.warmup,
                 amp={'auto': None, 'on': True, 'off': False}[args.amp],
                 channels_last=not args.no_channels_last, classes=args.classes)
    print_peer(r)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(r, f, indent=1)
    return 0 if r['status'] != 'error' else 1


if __name__ == '__main__':
    sys.exit(main())
