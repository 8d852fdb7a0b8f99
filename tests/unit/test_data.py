"""The real JPEG path: synthetic tree -> listing (folders, list files) -> transforms.

Real files in tmp_path, real PIL, real processes; no mocks.
"""
import concurrent.futures
import multiprocessing
import os
import pickle
import subprocess
import sys

import numpy
import pytest
from PIL import Image

from pfn15.config import DataConfig
from pfn15.data import bench, health, imagenet, synthetic, transforms

from helpers import ROOT
CLASSES, TRAIN, VAL, SIZE = 4, 6, 2, 64


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synth'))
    synthetic.write_tree(root, CLASSES, TRAIN, VAL, SIZE, seed=3, list_files=True)
    return root


def cfg(root, **kw):
    kw.setdefault('crop_size', 32)
    kw.setdefault('val_resize', 40)
    return DataConfig(root=root, **kw)


def as_pairs(dataset):
    return [(p, int(y)) for p, y in (dataset[i] for i in range(len(dataset)))]


# ---------------------------------------------------------------- listing

def test_folders_round_trip(tree):
    train, val, meta = imagenet.load(cfg(tree))
    assert meta['classes'] == CLASSES and meta['in_channels'] == 3
    assert meta['class_names'] == sorted(os.listdir(os.path.join(tree, 'train')))
    assert len(train) == CLASSES * TRAIN and len(val) == CLASSES * VAL
    path, label = train[TRAIN]                  # first image of class 1, not decoded
    assert isinstance(path, str) and os.path.isfile(path)
    assert isinstance(label, numpy.int32) and label == 1
    assert os.path.basename(os.path.dirname(path)) == meta['class_names'][1]
    # Picklable: scatter_dataset broadcasts the listing to every rank.
    assert as_pairs(pickle.loads(pickle.dumps(train))) == as_pairs(train)


def test_list_files_round_trip(tree):
    by_list = imagenet.load(cfg(tree, train_list='train.txt', val_list='val.txt'))
    by_folder = imagenet.load(cfg(tree))
    for a, b in zip(by_list[:2], by_folder[:2]):
        assert sorted(as_pairs(a)) == sorted(as_pairs(b))
    assert by_list[2] == by_folder[2]


def test_list_files_absolute_paths_and_spaces(tree, tmp_path):
    train, _, _ = imagenet.load(cfg(tree))
    spaced = tmp_path / 'a dir'
    spaced.mkdir()
    img = spaced / 'an image.JPEG'
    img.write_bytes(open(train[0][0], 'rb').read())
    lst = tmp_path / 'list.txt'
    lst.write_text('# comment\n\n%s 0\n%s 1\n' % (img, train[TRAIN][0]))
    t, v, meta = imagenet.load(cfg(str(tmp_path), train_list=str(lst), val_list=str(lst)))
    assert as_pairs(t) == [(str(img), 0), (train[TRAIN][0], 1)]
    assert meta['classes'] == 2


@pytest.mark.parametrize('lists', [False, True])
def test_classes_keeps_the_first_n(tree, lists):
    kw = dict(train_list='train.txt', val_list='val.txt') if lists else {}
    train, val, meta = imagenet.load(cfg(tree, classes=2, **kw))
    assert meta['classes'] == 2 and len(meta['class_names']) == 2
    assert len(train) == 2 * TRAIN and len(val) == 2 * VAL
    assert set(int(y) for _, y in as_pairs(train) + as_pairs(val)) == {0, 1}


# ---------------------------------------------------------------- transforms

def test_train_and_val_shapes_dtypes_ranges(tree):
    c = cfg(tree)
    train, val, _ = imagenet.load(c)
    lo = (0 - numpy.array(c.mean)) / numpy.array(c.std)
    hi = (255 - numpy.array(c.mean)) / numpy.array(c.std)
    for t, ds in ((transforms.train_transform(c), train), (transforms.val_transform(c), val)):
        t = pickle.loads(pickle.dumps(t))       # MultiprocessIterator's workers get a copy
        for i in (0, len(ds) - 1):
            x, y = t(ds[i])
            assert x.shape == (3, 32, 32) and x.dtype == numpy.float32
            assert isinstance(y, numpy.int32) and y == ds[i][1]
            assert x.flags.c_contiguous
            for ch in range(3):
                assert lo[ch] - 1e-4 <= x[ch].min() and x[ch].max() <= hi[ch] + 1e-4
            assert x.std() > 0.1                # an image, not a constant
    # Val is deterministic, train is not.
    v = transforms.val_transform(c)
    assert numpy.array_equal(v(val[0])[0], v(val[0])[0])
    t = transforms.train_transform(c)
    outs = [t(train[0])[0] for _ in range(4)]
    assert any(not numpy.array_equal(outs[0], o) for o in outs[1:])


def test_normalization_is_exact_on_a_flat_image(tmp_path):
    # A PNG named .JPEG (PIL detects the format): lossless, so values are exact.
    path = str(tmp_path / 'flat.JPEG')
    Image.new('RGB', (50, 40), (10, 128, 250)).save(path, 'PNG')
    c = cfg(str(tmp_path))
    expect = (numpy.array([10, 128, 250]) - numpy.array(c.mean)) / numpy.array(c.std)
    for t in (transforms.train_transform(c), transforms.val_transform(c)):
        x, _ = t((path, 0))
        numpy.testing.assert_allclose(x.reshape(3, -1).mean(1), expect, atol=1e-4)
        numpy.testing.assert_allclose(x.reshape(3, -1).std(1), 0, atol=1e-4)


def test_grayscale_cmyk_png_decode_to_rgb(tmp_path):
    rng = numpy.random.RandomState(0)
    gray = str(tmp_path / 'gray.JPEG')
    Image.fromarray(rng.randint(0, 255, (60, 70), numpy.uint8)).save(gray, 'JPEG')
    cmyk = str(tmp_path / 'cmyk.JPEG')
    Image.fromarray(rng.randint(0, 255, (60, 70, 3), numpy.uint8)).convert('CMYK').save(
        cmyk, 'JPEG')
    png = str(tmp_path / 'png.JPEG')
    Image.fromarray(rng.randint(0, 255, (60, 70, 4), numpy.uint8), 'RGBA').save(png, 'PNG')
    assert Image.open(gray).mode == 'L' and Image.open(cmyk).mode == 'CMYK'
    c = cfg(str(tmp_path), mean=[0., 0., 0.], std=[1., 1., 1.])
    before = health.bad_image_count()
    for t in (transforms.train_transform(c), transforms.val_transform(c)):
        for path in (gray, cmyk, png):
            x, _ = t((path, 0))
            assert x.shape == (3, 32, 32) and x.std() > 1
        x, _ = t((gray, 0))
        assert numpy.array_equal(x[0], x[1]) and numpy.array_equal(x[1], x[2])
    assert health.bad_image_count() == before


def test_random_sized_crop_box_geometry():
    rng = numpy.random.RandomState(0)
    for _ in range(300):
        w, h = rng.randint(20, 600, 2)
        x0, y0, x1, y1 = transforms.random_sized_crop_box(w, h, rng, 0.08, 3 / 4., 4 / 3.)
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        cw, ch = x1 - x0, y1 - y0
        # Sampled boxes keep to the area and aspect ranges (+rounding); the
        # fallback spans the full width or height, so this skips it.
        if cw < w and ch < h:
            assert cw * ch >= 0.08 * w * h * 0.8
            assert 3 / 4. * 0.85 <= cw / ch <= 4 / 3. * 1.15
    # An impossible request falls back to the centre, aspect clamped: a 1000x100
    # strip with aspect <= 4/3 gives a centred 133x100 box.
    box = transforms.random_sized_crop_box(1000, 100, rng, 0.9, 3 / 4., 4 / 3.)
    assert box == (433, 0, 566, 100)


def test_scaled_decode_keeps_the_geometry(tmp_path):
    # A big smooth image, a box wide enough for libjpeg's 1/4 scale: the output
    # must match a full-size decode of the same box (same geometry), up to
    # what the DCT scaling changes in the pixels.
    y, x = numpy.mgrid[0:900, 0:1200]
    img = numpy.stack([x * 255 / 1200, y * 255 / 900, (x + y) % 256], -1)
    path = str(tmp_path / 'big.JPEG')
    Image.fromarray(img.astype(numpy.uint8)).save(path, 'JPEG', quality=95)

    def box(w, h):
        return (100, 50, 1100, 850)              # shorter side 800
    full = numpy.asarray(transforms.decode_box(path, box, 64, scaled=False), numpy.float32)
    fast = numpy.asarray(transforms.decode_box(path, box, 64), numpy.float32)     # 1/8 scale
    small = numpy.asarray(transforms.decode_box(path, box, 200), numpy.float32)   # 1/4 scale
    full200 = numpy.asarray(transforms.decode_box(path, box, 200, scaled=False), numpy.float32)
    assert numpy.abs(full[..., :2] - fast[..., :2]).mean() < 1.0     # a 10 px shift: 1.8
    assert numpy.abs(full200[..., :2] - small[..., :2]).mean() < 1.0


# ---------------------------------------------------------------- processes

def _draws(context, transform, path, n=4):
    # Two processes at once, each drawing n augmentations of the same image.
    pools = [concurrent.futures.ProcessPoolExecutor(1, mp_context=context) for _ in range(2)]
    try:
        futures = [[p.submit(transform, (path, 0)) for _ in range(n)] for p in pools]
        return [numpy.stack([f.result(timeout=120)[0] for f in fs]) for fs in futures]
    finally:
        for p in pools:
            p.shutdown()


def test_augmentation_differs_across_spawned_processes(tree):
    c = cfg(tree)
    path = imagenet.load(c)[0][0][0]
    a, b = _draws(multiprocessing.get_context('spawn'), transforms.train_transform(c), path)
    assert not numpy.array_equal(a, b)
    assert not all(numpy.array_equal(a[0], a[i]) for i in range(1, len(a)))


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs fork')
def test_augmentation_differs_across_forked_processes(tree):
    # The case that bites: workers forked from a parent whose RNG is already
    # seeded would all replay the parent's sequence.
    c = cfg(tree)
    path = imagenet.load(c)[0][0][0]
    transforms.random_state()
    a, b = _draws(multiprocessing.get_context('fork'), transforms.train_transform(c), path)
    assert not numpy.array_equal(a, b)


def test_augmentation_by_sample_is_the_same_in_any_process(tree):
    # The training iterator passes (epoch, index): the crop and flip depend on
    # (seed, epoch, index) alone, not on the process that decodes.
    c = cfg(tree)
    path = imagenet.load(c)[0][0][0]
    t = transforms.train_transform(c, seed=7)
    pools = [concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(
        'spawn')) for _ in range(2)]
    try:
        keys = [(0, 3), (1, 3), (0, 4)]
        got = [[p.submit(t, (path, 0, key)).result(timeout=120)[0] for key in keys]
               for p in pools]
    finally:
        for p in pools:
            p.shutdown()
    here = [t((path, 0, key))[0] for key in keys]
    for a, b, c_ in zip(got[0], got[1], here):
        assert numpy.array_equal(a, b) and numpy.array_equal(a, c_)
    assert not numpy.array_equal(here[0], here[1])       # another epoch: another crop
    assert not numpy.array_equal(here[0], here[2])       # another sample index
    other_seed = transforms.train_transform(c, seed=8)((path, 0, (0, 3)))[0]
    assert not numpy.array_equal(here[0], other_seed)


# ---------------------------------------------------------------- synthetic + bench

def test_synthetic_is_deterministic_and_varied(tmp_path):
    a, b, c = (str(tmp_path / n) for n in 'abc')
    names = synthetic.write_tree(a, 3, 3, 1, 40, seed=5)
    synthetic.write_tree(b, 3, 3, 1, 40, seed=5)
    synthetic.write_tree(c, 3, 3, 1, 40, seed=6)
    assert names == sorted(names) and len(set(names)) == 3

    def files(root):
        out = {}
        for d, _, fs in os.walk(root):
            for f in fs:
                out[os.path.relpath(os.path.join(d, f), root)] = open(os.path.join(d, f),
                                                                      'rb').read()
        return out
    fa, fb, fc = files(a), files(b), files(c)
    assert len(fa) == 3 * 4 and fa == fb and fa != fc
    sizes = {Image.open(os.path.join(a, f)).size for f in fa}
    assert len(sizes) > 3                       # sizes and aspect ratios vary
    assert all(Image.open(os.path.join(a, f)).format == 'JPEG' for f in fa)


def test_synth_cli(tmp_path):
    out = str(tmp_path / 'tree')
    r = subprocess.run([sys.executable, '-m', 'pfn15.data', 'synth', out, '--classes', '2',
                        '--train', '2', '--val', '1', '--size', '32', '--list-files'],
                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, r.stderr
    assert 'wrote 6 JPEG files' in r.stdout
    lines = open(os.path.join(out, 'train.txt')).read().split('\n')
    assert lines[0].endswith(' 0') and len([ln for ln in lines if ln]) == 4
    bad = subprocess.run([sys.executable, '-m', 'pfn15.data', 'synth', out, '--classes', '0'],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert bad.returncode == 2 and '--classes' in bad.stderr


def test_bench_run_reports_the_figures(tree):
    r = bench.run(tree, images=6, crop_size=32, repeats=1)
    for key in ('ours_img_per_s', 'baseline_img_per_s', 'ratio', 'workers_needed',
                'ours_packed_img_per_s'):
        assert key in r
    assert r['ours_img_per_s'] > 0 and r['baseline_img_per_s'] > 0
    assert r['ours_packed_img_per_s'] > 0
    # Same boxes and flips on both sides: the outputs agree to a fraction of a level.
    assert r['mean_abs_diff_vs_baseline'] < 2.0
