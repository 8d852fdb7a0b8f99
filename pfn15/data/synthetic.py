"""A synthetic ImageNet-layout tree of real JPEG files, with learnable classes.

`python -m pfn15.data synth OUT_DIR ...` (or `write_tree`) writes

    OUT_DIR/train/<class>/<class>_00000.JPEG ...
    OUT_DIR/val/<class>/...
    OUT_DIR/train.txt, OUT_DIR/val.txt      (with list_files: `path label` lines)

so the real JPEG path (listing, decoding, augmentation, MultiprocessIterator,
the global sample order) can be exercised and tested anywhere, without
ImageNet. Each class is a distinct combination of shape, colour, texture and
background style; each image places its object at a random position and scale on a noisy background,
at a random size and aspect ratio around `size`. A CNN can learn the classes,
a pixel-wise lookup cannot.

The output is a pure function of the arguments: every image has its own
RandomState seeded by (seed, split, class, index).
"""
import itertools
import os

import numpy
from PIL import Image

SHAPES = ('circle', 'square', 'triangle', 'cross', 'ring', 'diamond', 'bar', 'star')
COLOURS = {
    'red': (220, 40, 40), 'green': (40, 190, 60), 'blue': (40, 80, 230),
    'yellow': (235, 220, 40), 'cyan': (40, 210, 220), 'magenta': (210, 50, 200),
    'white': (240, 240, 240), 'orange': (245, 140, 30), 'purple': (120, 50, 170),
    'brown': (130, 80, 40),
}
TEXTURES = ('solid', 'hstripes', 'vstripes', 'checker', 'dots')
BACKGROUNDS = ('dark', 'light', 'gradient')
_SPLITS = {'train': 0, 'val': 1}


def max_classes():
    return len(SHAPES) * len(COLOURS) * len(TEXTURES) * len(BACKGROUNDS)


def class_specs(classes):
    """[(name, shape, colour, texture, background)] for the first `classes` classes.

    The first 120 classes step every attribute at once (shape c % 8,
    colour c % 10, ...), so neighbouring classes differ in all of them; the
    rest of the combinations follow in a fixed shuffled order.
    """
    if not 1 <= classes <= max_classes():
        raise ValueError('classes must be in 1..%d, got %d' % (max_classes(), classes))
    dims = (len(SHAPES), len(COLOURS), len(TEXTURES), len(BACKGROUNDS))
    order, seen = [], set()
    for c in range(120):
        combo = tuple(c % d for d in dims)
        if combo not in seen:
            seen.add(combo)
            order.append(combo)
    rest = [p for p in itertools.product(*map(range, dims)) if p not in seen]
    numpy.random.RandomState(0).shuffle(rest)
    order += rest
    colour_names = list(COLOURS)
    width = max(4, len(str(classes - 1)))
    specs = []
    for c, (s, k, t, b) in enumerate(order[:classes]):
        shape, colour, texture, bg = SHAPES[s], colour_names[k], TEXTURES[t], BACKGROUNDS[b]
        # Zero-padded index first, so sorted folder names give label order.
        name = '%0*d-%s-%s-%s-%s' % (width, c, colour, shape, texture, bg)
        specs.append((name, shape, colour, texture, bg))
    return specs


def _shape_mask(shape, x, y, r):
    """Boolean mask of `shape` with radius r; x, y are coordinates relative to its centre."""
    ax, ay = numpy.abs(x), numpy.abs(y)
    if shape == 'circle':
        return x * x + y * y <= r * r
    if shape == 'square':
        return (ax <= 0.8 * r) & (ay <= 0.8 * r)
    if shape == 'triangle':
        return (y <= 0.7 * r) & (y >= 2.0 * ax - r)
    if shape == 'cross':
        return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))
    if shape == 'ring':
        d2 = x * x + y * y
        return (d2 <= r * r) & (d2 >= 0.36 * r * r)
    if shape == 'diamond':
        return ax + ay <= r
    if shape == 'bar':
        return (ax <= r) & (ay <= 0.35 * r)
    if shape == 'star':   # five points: radius modulated by the angle
        theta = numpy.arctan2(y, x)
        return numpy.hypot(x, y) <= r * (0.55 + 0.45 * numpy.cos(5 * theta))
    raise ValueError(shape)


def _texture(texture, x, y, period):
    """0..1 modulation of the object's colour."""
    if texture == 'solid':
        return numpy.ones(numpy.broadcast(x, y).shape, numpy.float32)
    if texture == 'hstripes':
        return ((y // period) % 2).astype(numpy.float32) + 0 * x
    if texture == 'vstripes':
        return ((x // period) % 2).astype(numpy.float32) + 0 * y
    if texture == 'checker':
        return ((x // period + y // period) % 2).astype(numpy.float32)
    if texture == 'dots':
        dx, dy = x % period - period / 2, y % period - period / 2
        return (dx * dx + dy * dy > (period / 3) ** 2).astype(numpy.float32)
    raise ValueError(texture)


def make_image(spec, size, rng):
    """One H x W x 3 uint8 image of class `spec`, drawn with `rng`."""
    _, shape, colour, texture, bg = spec
    # Size and aspect ratio vary around `size`, as ImageNet's do around ~400.
    w = max(8, int(round(size * numpy.exp(rng.uniform(-0.25, 0.25)))))
    h = max(8, int(round(size * numpy.exp(rng.uniform(-0.25, 0.25)))))
    y, x = numpy.ogrid[0:h, 0:w]
    x = x.astype(numpy.float32)
    y = y.astype(numpy.float32)

    # Background: a base tone (the class's style) plus per-image noise, so no
    # single pixel value identifies a class. float32 throughout: this is the
    # generator's hot loop.
    f32 = numpy.float32
    if bg == 'gradient':
        a, b = rng.uniform(20, 220, 3).astype(f32), rng.uniform(20, 220, 3).astype(f32)
        t = (x * f32(0.5 / w) + y * f32(0.5 / h))[..., None]
        img = a + (b - a) * t
    else:
        lo, hi = (20, 90) if bg == 'dark' else (150, 220)
        img = numpy.empty((h, w, 3), f32)
        img[...] = rng.uniform(lo, hi, 3).astype(f32)
    noise = numpy.frombuffer(rng.bytes(h * w * 3), numpy.uint8).reshape(h, w, 3)
    img += noise * f32(50 / 255.) - f32(25)

    # The object: random centre and scale, textured in the class colour.
    m = min(w, h)
    # Python floats, not NumPy float64 scalars: they keep the arrays float32
    # under NumPy 2's promotion rules too.
    r = float(m * rng.uniform(0.2, 0.42))
    cx = float(rng.uniform(r * 0.8, w - r * 0.8))
    cy = float(rng.uniform(r * 0.8, h - r * 0.8))
    mask = _shape_mask(shape, x - cx, y - cy, r)
    period = float(max(2.0, r * rng.uniform(0.15, 0.3)))
    tex = _texture(texture, x - cx, y - cy, period)
    rgb = (numpy.asarray(COLOURS[colour]) + rng.uniform(-20, 20, 3)).astype(f32)
    obj = rgb * (f32(0.45) + f32(0.55) * tex[..., None])
    img[mask] = obj[mask]
    return numpy.clip(img, 0, 255, out=img).astype(numpy.uint8)


def write_tree(out_dir, classes, train, val, size, seed=0, list_files=False, quality=90):
    """Write the tree; `train`/`val` images per class. Returns the class names."""
    specs = class_specs(classes)
    lists = {'train': [], 'val': []}
    for split, count in (('train', train), ('val', val)):
        for label, spec in enumerate(specs):
            folder = os.path.join(out_dir, split, spec[0])
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                rng = numpy.random.RandomState([seed, _SPLITS[split], label, i])
                fname = '%s_%05d.JPEG' % (spec[0].split('-')[0], i)
                Image.fromarray(make_image(spec, size, rng)).save(
                    os.path.join(folder, fname), 'JPEG', quality=quality)
                lists[split].append('%s/%s/%s %d' % (split, spec[0], fname, label))
    if list_files:
        for split, lines in lists.items():
            with open(os.path.join(out_dir, split + '.txt'), 'w') as f:
                f.write('\n'.join(lines) + '\n')
    return [s[0] for s in specs]
