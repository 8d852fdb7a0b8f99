"""How fast the train transform decodes and augments, against a plain PIL baseline.

`run(root, ...)` times, in the same processes, on the same files, with the
same crop boxes and flips (both sides draw from RandomStates seeded alike):

* ours: `TrainTransform.apply` (scaled JPEG decode, one crop+resize call on
  uint8, one fused float pass);
* baseline: `Image.open(path).convert('RGB')` at full size, `.crop(box)`,
  `.resize(...)`, flip, then `(float32(x) - mean) / std` and a transpose --
  the textbook pipeline, same output shape, dtype and normalization;

then the DALI decoder (pfn15.data.dali) on the same files: its CPU-only
mode on one thread (per core) and on `workers` threads, and device='mixed'
(nvJPEG) where a GPU is present; and two ablations that say which part
pays: ours without scaled decoding, and the baseline with our fused
normalization; and ours on the same bytes
packed into one shard and read by offset (pfn15.data.packed, "PIL on
packed"). Calls interleave image by image, the order rotating so each variant goes first equally often (the
first call on a file finds colder caches), so a noisy machine slows all
alike; each image counts with its best time of `repeats` passes.
`python -m pfn15.bench data` is the CLI around it.
"""
import math
import multiprocessing
import os
import sys
import time

import numpy
from PIL import Image

from pfn15.config import DataConfig
from pfn15.data import imagenet, transforms

# Images/s one GPU consumes (docs/recipe.md, derived): PFN's 128 k img/s
# over 1,024 P100, Fujitsu's 1.73 M img/s over 2,048 V100, NVIDIA
# DeepLearningExamples' ResNet-50 on A100 (AMP), MLPerf Training v3.1 on H100.
FEED = {'P100 (PFN, 125 img/s)': 125.0, 'V100 (Fujitsu, 845 img/s)': 845.0,
        'A100 AMP (DeepLearningExamples, 2,470 img/s)': 2470.0,
        'H100 (MLPerf v3.1, 2,840 img/s)': 2840.0}


class BaselineTransform:
    """Full-size decode, crop, resize, flip, normalize: plain PIL + NumPy."""

    def __init__(self, data_cfg):
        self.ours = transforms.TrainTransform(data_cfg)   # for the crop geometry only
        self.size = data_cfg.crop_size
        self.mean = numpy.asarray(data_cfg.mean, numpy.float32)
        self.std = numpy.asarray(data_cfg.std, numpy.float32)

    def apply(self, path, rng, fused_norm=False):
        with Image.open(path) as f:
            img = f.convert('RGB')
        box = self.ours.crop_box(img.size[0], img.size[1], rng)
        img = img.crop(box).resize((self.size, self.size), Image.BILINEAR)
        flip = rng.randint(2) == 1
        if fused_norm:
            return transforms.to_chw(img, self.ours.mean, self.ours.inv_std, flip)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = (numpy.asarray(img, dtype=numpy.float32) - self.mean) / self.std
        return x.transpose(2, 0, 1)


def sample_files(root, images):
    """`images` image paths spread evenly over root/train (or root)."""
    top = os.path.join(root, 'train') if os.path.isdir(os.path.join(root, 'train')) else root
    found = []
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        found.extend(os.path.join(folder, f) for f in sorted(files)
                     if f.lower().endswith(imagenet.IMAGE_EXTENSIONS))
    if not found:
        raise ValueError('no image files under %s' % top)
    step = max(1, len(found) // images)
    return found[::step][:images]


VARIANTS = ('ours', 'baseline', 'ours_full_decode', 'baseline_fused_norm', 'ours_packed')


def pack_files(files, folder):
    """The files' bytes back to back in one shard of `folder` (the packed format's
    layout, pfn15.data.packed): [packed.Sample] in the order of `files`."""
    import zlib
    from pfn15.data import packed
    samples, offset = [], 0
    with open(os.path.join(folder, packed.shard_name('train', 0)), 'wb') as f:
        for i, p in enumerate(files):
            with open(p, 'rb') as src:
                data = src.read()
            f.write(data)
            samples.append(packed.Sample(folder, 'train', i, 0, offset, len(data),
                                         zlib.crc32(data)))
            offset += len(data)
    return samples


def _measure(files, crop_size, seed, repeats, samples=None):
    """Seconds per variant for one pass over `files` (best of `repeats` per image);
    `samples`: the same images in a shard (the 'ours_packed' variant)."""
    cfg = DataConfig(crop_size=crop_size)
    ours, base = transforms.TrainTransform(cfg), BaselineTransform(cfg)
    packed_of = dict(zip(files, samples or ()))
    calls = {
        'ours': lambda p, rng: ours.apply(p, rng),
        'baseline': lambda p, rng: base.apply(p, rng),
        'ours_full_decode': lambda p, rng: ours.apply(p, rng, scaled=False),
        'baseline_fused_norm': lambda p, rng: base.apply(p, rng, fused_norm=True),
        # The same transform on the same bytes, read by offset from a shard.
        'ours_packed': lambda p, rng: ours.apply(packed_of[p], rng),
    }
    for p in files[:10]:                        # warm-up: imports, caches
        for fn in calls.values():
            fn(p, numpy.random.RandomState(0))
    seconds = {v: numpy.zeros((repeats, len(files))) for v in VARIANTS}
    diff = []
    for r in range(repeats):
        rngs = {v: numpy.random.RandomState(seed + r) for v in VARIANTS}
        for i, p in enumerate(files):
            # Rotate the order: the first call on a file pays for cold caches.
            k = (i + r) % len(VARIANTS)
            order = VARIANTS[k:] + VARIANTS[:k]
            out = {}
            for v in order:
                t0 = time.perf_counter()
                out[v] = calls[v](p, rngs[v])
                seconds[v][r, i] = time.perf_counter() - t0
            if r == 0:   # same box and flip: how far apart the outputs are, in 0..255 levels
                diff.append(float(numpy.abs((out['ours'] - out['baseline'])
                                            / ours.inv_std).mean()))
                if not numpy.array_equal(out['ours'], out['ours_packed']):
                    raise AssertionError('packed and folder decodes of %s differ' % p)
    # Each image's best time over the repeats: what a burst of load from other
    # processes adds is dropped, for both sides alike.
    return {v: float(t.min(axis=0).sum()) for v, t in seconds.items()}, float(numpy.mean(diff))


def _measure_args(args):
    return _measure(*args)


def dali_rate(files, crop_size, seed, repeats, threads=1, device_id=None, batch=32):
    """Images/s of the DALI decoder (pfn15.data.dali: window decode, resize, flip,
    normalize) over `files`, best of `repeats` per batch; DALI's output stays
    where DALI made it (host or GPU). None and the reason when DALI cannot run."""
    try:
        from pfn15.data import dali
        t = transforms.TrainTransform(DataConfig(crop_size=crop_size), seed=seed)
        decoder = dali.Decoder(t, batch, threads, device_id)
        feeds = decoder.feeds([(p, (0, i)) for i, p in enumerate(files)])
        batches = [feeds[i:i + batch] for i in range(0, len(feeds), batch)]
        decoder.run_batch(batches[0])                  # warm-up: buffers, codecs
        seconds = numpy.zeros((repeats, len(batches)))
        for r in range(repeats):
            for k, b in enumerate(batches):
                t0 = time.perf_counter()
                out = decoder.run_batch(b)
                if device_id is not None:
                    out.as_tensor()                    # waits for the GPU's work
                seconds[r, k] = time.perf_counter() - t0
    except (ImportError, RuntimeError) as e:
        first = str(e).strip().splitlines()
        return None, '%s: %s' % (type(e).__name__, first[0] if first else '')
    return len(files) / float(seconds.min(axis=0).sum()), None


def gpu_present():
    """Whether a CUDA GPU is visible (nvidia-smi's device files), without CUDA."""
    return os.path.exists('/dev/nvidiactl') and any(
        os.path.exists('/dev/nvidia%d' % k) for k in range(16))


def readable_files(files):
    """(the files that decode in full, {path: reason} of those that do not).

    One full decode per file also warms the page cache for every variant.
    A bad file is named once, on stderr, and left out of the timing.
    """
    good, bad = [], {}
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
            good.append(p)
        except transforms.BAD_IMAGE_ERRORS as e:
            bad[p] = '%s: %s' % (type(e).__name__, e)
            print('bench data: skipping bad image %s (%s)' % (p, bad[p]),
                  file=sys.stderr, flush=True)
    if not good:
        raise ValueError('none of the %d sampled image files decodes (%s ...)'
                         % (len(files), files[0]))
    return good, bad


def run(root, workers=1, images=200, crop_size=224, seed=0, repeats=3, feed=None):
    """Figures of the train transform's speed; see the module docstring.

    `workers` processes measure at once (as a node's decoders would run), each
    over the same files. Images/s are per worker process.
    """
    files, bad = readable_files(sample_files(root, images))
    import shutil
    import tempfile
    shard_dir = tempfile.mkdtemp(prefix='pfn15-bench-packed-')
    try:
        samples = pack_files(files, shard_dir)
        jobs = [(files, crop_size, seed + 1000 * k, repeats, samples) for k in range(workers)]
        if workers == 1:
            results = [_measure(*jobs[0])]
        else:
            with multiprocessing.get_context('spawn').Pool(workers) as pool:
                results = pool.map(_measure_args, jobs)
        # DALI after the PIL variants, on the same files: one DALI thread (per
        # core), then `workers` threads (a node's share), then nvJPEG if a GPU is here.
        dali_cpu, dali_why = dali_rate(files, crop_size, seed, repeats)
        dali_node = (dali_rate(files, crop_size, seed, repeats, threads=workers)[0]
                     if workers > 1 and dali_cpu else None)
        dali_gpu, gpu_why = (dali_rate(files, crop_size, seed, repeats, threads=workers,
                                       device_id=0) if gpu_present() and dali_cpu
                             else (None, 'no GPU here' if dali_cpu else dali_why))
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)
    n = len(files)
    rate = {v: float(numpy.mean([n / s[v] for s, _ in results])) for v in VARIANTS}
    sizes = []
    for p in files:
        with Image.open(p) as im:
            sizes.append(im.size)
    ours = rate['ours']
    # Per core as the PIL rows are: with `workers` processes decoding at once,
    # DALI's `workers`-thread rate per thread (its 1-thread rate ran alone).
    dali_core = dali_node / workers if dali_node else dali_cpu
    return {
        'root': root, 'images': len(files), 'repeats': repeats, 'workers': workers,
        'bad_files': sorted(bad),
        'crop_size': crop_size, 'mean_image_size': [round(v) for v in numpy.mean(sizes, 0)],
        'ours_img_per_s': ours,
        'baseline_img_per_s': rate['baseline'],
        'ratio': ours / rate['baseline'],
        # Ablations: what the scaled decode and the fused normalization each pay.
        'ours_full_decode_img_per_s': rate['ours_full_decode'],
        'baseline_fused_norm_img_per_s': rate['baseline_fused_norm'],
        # PIL on packed: the same transform reading the same bytes from a shard.
        'ours_packed_img_per_s': rate['ours_packed'],
        'node_img_per_s': ours * workers,
        'mean_abs_diff_vs_baseline': float(numpy.mean([d for _, d in results])),
        'workers_needed': {name: int(math.ceil(r / ours))
                           for name, r in (feed or FEED).items()},
        # DALI: CPU-only mode, per core (one DALI thread), and on `workers` threads;
        # mixed (nvJPEG) on GPU 0 where one is present.
        'dali_cpu_img_per_s': dali_cpu,
        'dali_cpu_node_img_per_s': dali_node,
        'dali_cpu_per_core_img_per_s': dali_core,
        'dali_cpu_not_run': dali_why,
        'dali_mixed_img_per_s': dali_gpu,
        'dali_mixed_not_run': gpu_why,
        # Per GPU type: cores each CPU path needs to feed one GPU, and for DALI
        # mixed the fraction of one GPU's decoding throughput it takes.
        'cores_needed': {name: {path: (int(math.ceil(r / v)) if v else None)
                                for path, v in (('PIL on folders', ours),
                                                ('PIL on packed', rate['ours_packed']),
                                                ('DALI CPU', dali_core))}
                         for name, r in (feed or FEED).items()},
        'gpu_decoders_needed': {name: (round(r / dali_gpu, 3) if dali_gpu else None)
                                for name, r in (feed or FEED).items()},
    }
