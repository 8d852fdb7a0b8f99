"""Train and validation transforms: (path, label) -> (C x crop x crop float32, int32 label).

Train: random-size crop (area fraction in [min_area, 1], aspect ratio in
[min_aspect, max_aspect], log-uniform; after 10 misses the centre of the image
with the aspect ratio clamped, as Inception / Goyal et al.) resized to
crop_size, and a random horizontal flip. Val: shorter side to val_resize,
centre crop_size crop. Both then normalize by data.mean / data.std.

Why it is fast (see `pfn15.data.bench`): the crop box is chosen from the JPEG
header alone, so libjpeg can decode at 1/2, 1/4 or 1/8 scale (`Image.draft`)
whenever the box still has >= crop_size pixels at that scale; the box is then
cropped and resized in one PIL call on uint8 data, and the only float work is
one fused uint8 -> float32 pass into the output array (flip included). The
crop geometry is the same in original-image coordinates as a full decode's.

Decoding runs in MultiprocessIterator's worker processes (forkserver), so the
callables here are picklable top-level classes. Augmentation is drawn by
sample, not by process: the training iterator hands the transform
(path, label, (epoch, index)) and the crop and flip come from a generator
seeded by (seed, epoch, index) alone -- the same pixels whichever rank or
decoding process handles the sample. Called with a plain (path, label), a
transform draws from its process's own RandomState (seeded from os.urandom).
"""
import math
import os
import struct
import threading

import numpy
from PIL import Image

from pfn15.data import DataError, health

# What PIL raises on truncated, corrupt or unreadable files (UnidentifiedImageError
# and "image file is truncated" are OSErrors; broken headers are SyntaxErrors...).
BAD_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error,
                    Image.DecompressionBombError)


# ---------------------------------------------------------------- randomness

_rng = None
_rng_pid = None


def random_state():
    """This process's RandomState, seeded from os.urandom on first use.

    Keyed by pid: a forked worker that inherited its parent's state would
    otherwise repeat the parent's (and its siblings') crops and flips.
    """
    global _rng, _rng_pid
    if _rng_pid != os.getpid():
        _rng = numpy.random.RandomState(numpy.frombuffer(os.urandom(16), numpy.uint32))
        _rng_pid = os.getpid()
    return _rng


def sample_random_state(seed, epoch, index):
    """The RandomState of sample `index` in `epoch`: a function of (seed, epoch, index) only."""
    return numpy.random.RandomState(numpy.random.PCG64(
        numpy.random.SeedSequence([int(seed), int(epoch), int(index)])))


def seed(value):
    """Make this process's augmentation repeatable (benchmarks, tests)."""
    global _rng, _rng_pid
    _rng = numpy.random.RandomState(value)
    _rng_pid = os.getpid()


# ---------------------------------------------------------------- geometry

def random_sized_crop_box(width, height, rng, min_area=0.08, min_aspect=3 / 4.,
                          max_aspect=4 / 3., attempts=10):
    """(x0, y0, x1, y1) of a random-size crop, in the image's pixel coordinates."""
    area = width * height
    log_lo = math.log(max(min_aspect, 1e-6))
    log_hi = math.log(max(max_aspect, 1e-6))
    for _ in range(attempts):
        target = area * rng.uniform(min_area, 1.0)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            x = rng.randint(0, width - w + 1)
            y = rng.randint(0, height - h + 1)
            return x, y, x + w, y + h
    # Fallback: the centre, as large as the aspect range allows.
    ratio = width / height
    if ratio < min_aspect:
        w, h = width, max(1, min(height, int(round(width / min_aspect))))
    elif ratio > max_aspect:
        w, h = max(1, min(width, int(round(height * max_aspect)))), height
    else:
        w, h = width, height
    x, y = (width - w) // 2, (height - h) // 2
    return x, y, x + w, y + h


def center_crop_box(width, height, crop_size, resize):
    """Box that "shorter side to `resize`, then centre `crop_size` crop" takes, in
    original coordinates (floats: no rounding before the one resize)."""
    side = min(width, height) * min(1.0, crop_size / resize)
    x0, y0 = (width - side) / 2.0, (height - side) / 2.0
    return x0, y0, x0 + side, y0 + side


# ---------------------------------------------------------------- decoding

def decode_box(path, box_of, size, scaled=True):
    """Open `path`, take the box `box_of(width, height)` (original coordinates)
    and return it resized to size x size: an RGB uint8 PIL image.

    JPEGs are decoded at the smallest libjpeg scale (1, 1/2, 1/4, 1/8) that
    keeps the box at >= `size` pixels on its shorter side, so nothing is lost
    to the resize that follows; other formats (a PNG named .JPEG) decode fully.
    `scaled=False` always decodes at full size (for the benchmark's ablation).
    """
    # A path, or a packed sample (pfn15.data.packed.Sample) read by offset.
    with Image.open(path if isinstance(path, str) else path.open()) as img:
        width, height = img.size
        box = box_of(width, height)
        shorter = min(box[2] - box[0], box[3] - box[1])
        scale = 1
        for s in (8, 4, 2):
            if scaled and shorter >= s * size:
                # draft() picks the largest power of two <= min(w // req_w, h // req_h),
                # which for these sizes is exactly s.
                res = img.draft('RGB', (max(1, width // s), max(1, height // s)))
                if res is not None:         # None: not a JPEG, decoded at full size
                    scale = width / res[1][2]
                break
        if img.mode not in ('RGB', 'L'):
            # CMYK, palette, alpha...: to RGB first (resampling a palette would not
            # interpolate); L and RGB are resized as they are, L expanded below.
            img = img.convert('RGB')
        if scale != 1:
            box = tuple(v / scale for v in box)
        out = img.resize((size, size), Image.BILINEAR, box=box)
    if out.mode != 'RGB':
        out = out.convert('RGB')
    return out


def to_chw(img, mean, inv_std, flip=False):
    """RGB uint8 PIL image -> normalized C x H x W float32 (one fused pass)."""
    a = numpy.asarray(img)
    if flip:
        a = a[:, ::-1]
    out = numpy.empty((a.shape[2], a.shape[0], a.shape[1]), numpy.float32)
    out[...] = a.transpose(2, 0, 1)      # the single uint8 -> float32 conversion
    out -= mean
    out *= inv_std
    return out


# ---------------------------------------------------------------- transforms

class _Transform:
    """Shared parts: normalization constants and the bad-image policy."""

    def __init__(self, data_cfg, seed=0):
        self.seed = seed
        self.crop_size = data_cfg.crop_size
        self.mean = numpy.asarray(data_cfg.mean, numpy.float32).reshape(-1, 1, 1)
        self.inv_std = (1.0 / numpy.asarray(data_cfg.std, numpy.float32)).reshape(-1, 1, 1)
        self.bad_images = data_cfg.bad_images
        # Decoding processes record bad and missing images where the creating
        # process reads them (pfn15.data.health).
        self.tally = health.tally()
        # False in training: rank 0 names each bad file once for all ranks
        # (health.Reporter); True elsewhere: the first process to meet it does.
        self.warn = True

    def __call__(self, in_data):
        path, label = in_data[:2]
        # (epoch, index) from the training iterator: augmentation by sample.
        rng = (sample_random_state(self.seed, *in_data[2]) if len(in_data) > 2
               else random_state())
        try:
            x = self.apply(path, rng)
        except BAD_IMAGE_ERRORS as e:
            if self.bad_images != 'error' and isinstance(e, (FileNotFoundError,
                                                             NotADirectoryError)):
                x = self._missing(path, e)
            else:
                x = self._bad(path, e)
        return x, numpy.int32(label)

    def _stand_in(self):
        # All zeros after normalization: the mean image, the least informative
        # stand-in (the sample of another index is out of a transform's reach).
        return numpy.zeros((len(self.mean), self.crop_size, self.crop_size), numpy.float32)

    def _missing(self, path, error):
        """Record the first missing file for DataCheck; a stand-in until the
        iteration ends and every rank stops."""
        what = ('file %s does not exist' % os.path.abspath(path) if isinstance(path, str)
                else str(error))   # a packed sample: its shard, truncated or gone
        self.tally.missing('data: %s (missing, not corrupt: is the whole data set on this '
                           'node?)' % what)
        return self._stand_in()

    def _bad(self, path, error):
        reason = '%s: %s' % (type(error).__name__, error)
        if self.bad_images == 'error':
            name = os.path.abspath(path) if isinstance(path, str) else str(path)
            message = ('bad image %s (%s); set data.bad_images=skip to replace such files '
                       'by the mean image' % (name, reason))
            if (os.getpid() != self.tally.creator
                    or threading.current_thread() is not threading.main_thread()):
                # A decoding process or thread: an exception here would break
                # Chainer's MultiprocessIterator on this rank alone; recorded,
                # DataCheck stops every rank at the end of the iteration.
                self.tally.missing('data: ' + message)
                return self._stand_in()
            raise DataError(message) from error
        self.tally.replaced(path, reason, warn=self.warn)
        return self._stand_in()


class TrainTransform(_Transform):
    """Random-size crop + flip, normalized; picklable."""

    def __init__(self, data_cfg, seed=0):
        super().__init__(data_cfg, seed)
        self.min_area = data_cfg.min_area
        self.min_aspect = data_cfg.min_aspect
        self.max_aspect = data_cfg.max_aspect

    def crop_box(self, width, height, rng):
        return random_sized_crop_box(width, height, rng, self.min_area,
                                     self.min_aspect, self.max_aspect)

    def apply(self, path, rng, scaled=True):
        """The augmented array of the image at `path`, drawn from `rng`."""
        img = decode_box(path, lambda w, h: self.crop_box(w, h, rng), self.crop_size, scaled)
        return to_chw(img, self.mean, self.inv_std, flip=rng.randint(2) == 1)


class ValTransform(_Transform):
    """Shorter side to val_resize, centre crop, normalized; picklable."""

    def __init__(self, data_cfg):
        super().__init__(data_cfg)
        self.val_resize = data_cfg.val_resize

    def apply(self, path, rng=None):
        img = decode_box(path, lambda w, h: center_crop_box(w, h, self.crop_size,
                                                            self.val_resize),
                         self.crop_size)
        return to_chw(img, self.mean, self.inv_std)


def train_transform(data_cfg, seed=0):
    return TrainTransform(data_cfg, seed)


def val_transform(data_cfg):
    return ValTransform(data_cfg)
