"""Bad input: every listing problem is one DataError line naming the file, line or
key; bad images are skipped and counted (data.bad_images=skip) or fatal (error).

Real files in tmp_path, real PIL, real processes; no mocks.
"""
import concurrent.futures
import multiprocessing
import os
import shutil

import numpy
import pytest

from pfn15.config import DataConfig
from pfn15.data import DataError, health, imagenet, synthetic, transforms


@pytest.fixture(scope='module')
def clean(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('clean'))
    synthetic.write_tree(root, 3, 3, 1, 40, list_files=True)
    return root


@pytest.fixture
def tree(clean, tmp_path):
    """A fresh copy of the clean tree, for a test to break."""
    root = str(tmp_path / 'data')
    shutil.copytree(clean, root)
    return root


def load_error(root, **kw):
    with pytest.raises(DataError) as e:
        imagenet.load(DataConfig(root=root, **kw))
    msg = str(e.value)
    assert '\n' not in msg, msg          # one readable line
    return msg


def lists(**kw):
    return dict(train_list='train.txt', val_list='val.txt', **kw)


def write(path, text):
    with open(path, 'w') as f:
        f.write(text)


# ---------------------------------------------------------------- roots and folders

def test_missing_root(tmp_path):
    missing = str(tmp_path / 'nope')
    assert missing in load_error(missing)
    assert 'data.root' in load_error('')


def test_root_that_is_a_file(tmp_path):
    path = tmp_path / 'file'
    path.write_text('x')
    assert str(path) in load_error(str(path))


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads any directory')
def test_unreadable_root(tree):
    os.chmod(tree, 0)
    try:
        assert 'not readable' in load_error(tree)
    finally:
        os.chmod(tree, 0o755)


def test_missing_train_folder(tree):
    shutil.rmtree(os.path.join(tree, 'train'))
    assert os.path.join(tree, 'train') in load_error(tree)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_empty_class_folder(tree, split):
    name = sorted(os.listdir(os.path.join(tree, split)))[1]
    folder = os.path.join(tree, split, name)
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    write(os.path.join(folder, 'README'), 'not an image')
    msg = load_error(tree)
    assert folder in msg and 'empty' in msg


def test_val_class_not_in_train(tree):
    os.makedirs(os.path.join(tree, 'val', 'zzz-stray'))
    assert 'zzz-stray' in load_error(tree)


def test_more_classes_than_present(tree):
    msg = load_error(tree, classes=4)
    assert 'data.classes=4' in msg and 'only 3' in msg
    msg = load_error(tree, classes=5, **lists())
    assert 'data.classes=5' in msg and 'only 3' in msg


# ---------------------------------------------------------------- list files

def _edit_line(path, n, text):
    lines = open(path).read().split('\n')
    lines[n - 1] = text
    write(path, '\n'.join(lines))


def test_missing_file_named_in_list(tree):
    lst = os.path.join(tree, 'train.txt')
    _edit_line(lst, 2, 'train/gone/missing.JPEG 0')
    msg = load_error(tree, **lists())
    assert '%s:2' % lst in msg and 'missing.JPEG' in msg and 'does not exist' in msg


@pytest.mark.parametrize('line, words', [
    ('justonefield', ['malformed']),
    ('train/a.JPEG zero', ['malformed', "'zero'"]),
])
def test_malformed_list_line(tree, line, words):
    lst = os.path.join(tree, 'val.txt')
    _edit_line(lst, 3, line)
    msg = load_error(tree, **lists())
    assert '%s:3' % lst in msg
    for w in words:
        assert w in msg


def test_label_out_of_range(tree):
    train, val = os.path.join(tree, 'train.txt'), os.path.join(tree, 'val.txt')
    first = open(val).read().split('\n')[0].rsplit(' ', 1)[0]
    _edit_line(val, 1, first + ' 3')                 # 3 classes: labels 0..2
    msg = load_error(tree, **lists())
    assert '%s:1' % val in msg and 'out of range' in msg

    # The training list is checked first, so its errors show with val.txt still broken.
    first = open(train).read().split('\n')[0].rsplit(' ', 1)[0]
    _edit_line(train, 1, first + ' -1')
    msg = load_error(tree, **lists())
    assert '%s:1' % train in msg and 'out of range' in msg

    # A typo'd huge label would leave classes without images.
    _edit_line(train, 1, first + ' 999')
    msg = load_error(tree, **lists())
    assert '%s:1' % train in msg and 'label 999' in msg


def test_unreadable_or_incomplete_lists(tree):
    assert 'data.val_list' in load_error(tree, train_list='train.txt')
    assert os.path.join(tree, 'nope.txt') in load_error(tree, **dict(lists(), val_list='nope.txt'))
    write(os.path.join(tree, 'empty.txt'), '\n')
    assert 'no entries' in load_error(tree, **dict(lists(), val_list='empty.txt'))


# ---------------------------------------------------------------- bad images

@pytest.fixture
def bad_files(tmp_path, clean):
    good = os.path.join(clean, 'train', sorted(os.listdir(os.path.join(clean, 'train')))[0])
    good = os.path.join(good, sorted(os.listdir(good))[0])
    data = open(good, 'rb').read()
    files = {
        'truncated': data[:len(data) // 2],
        'corrupt': b'\xff\xd8\xff\xe0' + os.urandom(2000),   # JPEG magic, garbage after
        'empty': b'',
        'text': b'this is not an image\n',
    }
    paths = {}
    for name, content in files.items():
        paths[name] = str(tmp_path / (name + '.JPEG'))
        with open(paths[name], 'wb') as f:
            f.write(content)
    paths['missing'] = str(tmp_path / 'deleted-after-listing.JPEG')
    return paths


def _cfg(mode):
    return DataConfig(crop_size=24, val_resize=32, bad_images=mode)


def test_bad_images_are_skipped_and_counted(bad_files, capfd):
    corrupt = {k: v for k, v in bad_files.items() if k != 'missing'}
    before = health.bad_image_count()
    for make in (transforms.train_transform, transforms.val_transform):
        t = make(_cfg('skip'))
        for path in corrupt.values():
            x, y = t((path, 7))
            assert x.shape == (3, 24, 24) and x.dtype == numpy.float32
            assert not x.any() and y == 7 and isinstance(y, numpy.int32)
    assert health.bad_image_count() == before + 2 * len(corrupt)
    assert health.first_data_error() is None
    err = capfd.readouterr().err
    for path in corrupt.values():       # one warning per file, not per use
        assert len([line for line in err.splitlines() if path in line]) == 1


def test_a_missing_file_is_a_data_error_not_a_bad_image(bad_files):
    # Missing is not corrupt: recorded (the trainer stops every rank with exit 2),
    # not counted among the skipped images; the first one is the one named.
    before = health.bad_image_count()
    t = transforms.train_transform(_cfg('skip'))
    x, _ = t((bad_files['missing'], 3))
    assert x.shape == (3, 24, 24) and not x.any()
    t((bad_files['missing'] + '-second', 3))
    assert health.bad_image_count() == before
    msg = health.first_data_error()
    assert bad_files['missing'] in msg and 'does not exist' in msg and '-second' not in msg
    health.clear_error()      # this process's record, for the other tests


def test_a_missing_file_in_a_worker_process_is_recorded_here(bad_files):
    t = transforms.val_transform(_cfg('skip'))
    ctx = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        list(pool.map(t, [(bad_files['missing'], 1)]))
    msg = health.first_data_error()
    assert msg is not None and bad_files['missing'] in msg
    health.clear_error()


def test_bad_images_in_a_worker_process_are_counted_here(bad_files):
    # MultiprocessIterator decodes in forkserver workers: their skips must
    # reach the training process's count.
    t = transforms.train_transform(_cfg('skip'))
    before = health.bad_image_count()
    ctx = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        outs = list(pool.map(t, [(bad_files['truncated'], 1), (bad_files['corrupt'], 2)]))
    assert [int(y) for _, y in outs] == [1, 2]
    assert health.bad_image_count() == before + 2


@pytest.mark.parametrize('kind', ['truncated', 'corrupt', 'empty', 'missing'])
def test_bad_images_error_mode(bad_files, kind):
    for make in (transforms.train_transform, transforms.val_transform):
        with pytest.raises(DataError) as e:
            make(_cfg('error'))((bad_files[kind], 0))
        assert bad_files[kind] in str(e.value) and 'data.bad_images' in str(e.value)


# ---------------------------------------------------------------- edge cases

def test_a_broken_symlink_is_missing_data_in_both_layouts(tree):
    folder = os.path.join(tree, 'train', sorted(os.listdir(os.path.join(tree, 'train')))[1])
    victim = os.path.join(folder, sorted(os.listdir(folder))[0])
    os.remove(victim)
    os.symlink('/nonexistent/elsewhere.JPEG', victim)
    # Class folders: the listing names it (it used to be dropped silently).
    msg = load_error(tree)
    assert victim in msg and 'broken symbolic link' in msg and 'missing data' in msg
    # List files: listed, so decoding it is a missing file (exit 2 in training).
    train, _, _ = imagenet.load(DataConfig(root=tree, **lists()))
    index = [train[i][0] for i in range(len(train))].index(victim)
    t = transforms.train_transform(_cfg('skip'))
    before = health.bad_image_count()
    t(train[index])
    msg = health.first_data_error()
    assert victim in msg and 'does not exist' in msg
    assert health.bad_image_count() == before      # missing, not counted as corrupt
    health.clear_error()


def test_ignored_files_and_folders_are_counted_and_said_once(tree):
    folder = os.path.join(tree, 'train', sorted(os.listdir(os.path.join(tree, 'train')))[0])
    write(os.path.join(folder, 'notes.txt'), 'x')
    write(os.path.join(folder, '.DS_Store'), 'x')          # hidden: not even counted
    os.makedirs(os.path.join(folder, 'nested'))
    write(os.path.join(tree, 'val', os.listdir(os.path.join(tree, 'val'))[0], 'README'), 'x')
    _, _, meta = imagenet.load(DataConfig(root=tree))
    note = meta['note']
    assert 'ignored 2 non-image file(s) and 1 nested folder(s)' in note, note
    assert imagenet.load(DataConfig(root=tree, **lists()))[2]['note'] is None


def test_one_warning_per_bad_file_across_processes(bad_files, capfd):
    # Two decoding processes meet the same truncated file three times each.
    t = transforms.train_transform(_cfg('skip'))
    before = health.bad_image_count()
    ctx = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        outs = list(pool.map(t, [(bad_files['truncated'], 5)] * 6))
    assert all(int(y) == 5 and not x.any() for x, y in outs)
    assert health.bad_image_count() == before + 6        # each use counts
    err = capfd.readouterr().err
    warnings = [ln for ln in err.splitlines() if bad_files['truncated'] in ln]
    assert len(warnings) == 1, err
    # What "skipped" means, said where it happens.
    assert 'replaced by the mean image, its label kept' in warnings[0]
    assert bad_files['truncated'] in health.bad_files()


def test_bench_data_names_a_corrupt_file_and_continues(tree, capfd):
    from pfn15.data import bench
    folder = os.path.join(tree, 'train', sorted(os.listdir(os.path.join(tree, 'train')))[0])
    victim = os.path.join(folder, sorted(os.listdir(folder))[0])
    with open(victim, 'r+b') as f:
        f.truncate(300)
    r = bench.run(tree, images=9, crop_size=24, repeats=1)
    assert r['bad_files'] == [victim] and r['images'] == 8
    assert r['ours_img_per_s'] > 0 and r['baseline_img_per_s'] > 0
    err = capfd.readouterr().err
    assert victim in err and 'Traceback' not in err


def test_synth_refuses_a_non_empty_target_or_cleans_it_saying_so(tmp_path):
    import subprocess
    import sys
    from helpers import ROOT, child_env
    out = str(tmp_path / 'tree')

    def synth(*args):
        return subprocess.run([sys.executable, '-m', 'pfn15.data', 'synth', out, '--train', '2',
                               '--val', '1', '--size', '24'] + list(args), cwd=ROOT,
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    assert synth('--classes', '4').returncode == 0
    r = synth('--classes', '2')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert out in r.stderr and 'not empty' in r.stderr and '--overwrite' in r.stderr
    assert len(os.listdir(os.path.join(out, 'train'))) == 4        # left alone
    r = synth('--classes', '2', '--overwrite')
    assert r.returncode == 0 and 'deleted train, val' in r.stdout, r.stderr
    assert len(os.listdir(os.path.join(out, 'train'))) == 2        # no old classes left
