"""ILSVRC2012 as downloaded: train/<wnid>/ class folders, a flat val/ of
ILSVRC2012_val_<8 digits>.JPEG and a label file (data.val_labels). Real JPEG
files written by pfn15.data.synthetic, real label files in each format.
Training on such a tree: tests/mpi/test_val_labels_runs.py."""
import os

import numpy
import pytest

from data_trees import clean, tree  # noqa: F401  (fixtures)

from pfn15.config import DataConfig
from pfn15.data import DataError, imagenet, val_labels


def load(root, labels_file, **kw):
    return imagenet.load(DataConfig(root=root, val_labels=labels_file, **kw))


def load_error(root, labels_file, **kw):
    with pytest.raises(DataError) as e:
        load(root, labels_file, **kw)
    msg = str(e.value)
    assert '\n' not in msg, msg
    return msg


def expected(labels, wnids):
    return [('val/' + flat, wnids.index(w)) for flat, w in sorted(labels)]


def listing(ds):
    return [(os.path.relpath(ds[i][0], ds.root), int(ds[i][1])) for i in range(len(ds))]


def test_kaggle_csv(tree):
    root, labels = tree
    train_ds, val_ds, meta = load(root, 'LOC_val_solution.csv')
    wnids = meta['class_names']
    assert wnids == sorted(wnids) and len(wnids) == 3 and wnids[0].startswith('n0')
    assert len(train_ds) == 12 and listing(val_ds) == expected(labels, wnids)
    # Each image's label is its original class: the pixels came from that folder.
    assert sorted(int(val_ds[i][1]) for i in range(len(val_ds))) == [0, 0, 1, 1, 2, 2]


def test_plain_file_with_and_without_extensions_and_absolute_path(tree, tmp_path):
    root, labels = tree
    path = str(tmp_path / 'val_labels.txt')
    with open(path, 'w') as f:
        f.write('# file wnid\n')
        for i, (flat, wnid) in enumerate(labels):
            f.write('%s %s\n' % (flat if i % 2 else flat[:-5], wnid))
    _, val_ds, meta = load(root, path)
    assert listing(val_ds) == expected(labels, meta['class_names'])


def test_classes_keeps_the_first_n(tree):
    root, labels = tree
    _, val_ds, meta = load(root, 'LOC_val_solution.csv', classes=2)
    assert meta['classes'] == 2
    wnids = sorted({w for _, w in labels})
    assert listing(val_ds) == [e for e in expected(labels, wnids) if e[1] < 2]


def test_devkit_ground_truth_with_meta_mat(tree):
    scipy_io = pytest.importorskip('scipy.io')
    root, labels = tree
    devkit = os.path.join(root, 'devkit', 'data')
    os.makedirs(devkit)
    wnids = sorted({w for _, w in labels})
    # The devkit's IDs are not the sorted-wnid order: give them in reverse, and a
    # non-leaf synset (ID > 1000) as the real meta.mat has.
    ids = {w: 1000 - k for k, w in enumerate(wnids)}
    records = [(ids[w], w, 'words', 0) for w in wnids] + [(1001, 'n00001740', 'entity', 3)]
    synsets = numpy.array(records, dtype=[('ILSVRC2012_ID', 'O'), ('WNID', 'O'),
                                          ('words', 'O'), ('num_children', 'O')])
    scipy_io.savemat(os.path.join(devkit, 'meta.mat'), {'synsets': synsets.reshape(-1, 1)})
    gt = os.path.join(devkit, 'ILSVRC2012_validation_ground_truth.txt')
    with open(gt, 'w') as f:
        for flat, wnid in labels:             # labels are in val-number order
            f.write('%d\n' % ids[wnid])
    _, val_ds, meta = load(root, gt)
    assert listing(val_ds) == expected(labels, meta['class_names'])

    os.remove(os.path.join(devkit, 'meta.mat'))
    msg = load_error(root, gt)
    assert 'meta.mat' in msg and 'not the sorted-wnid order' in msg


def _edit(path, fn):
    lines = open(path).read().splitlines()
    with open(path, 'w') as f:
        f.write('\n'.join(fn(lines)) + '\n')


def test_an_image_without_a_label(tree):
    root, labels = tree
    csv = os.path.join(root, 'LOC_val_solution.csv')
    _edit(csv, lambda lines: [ln for ln in lines if not ln.startswith(labels[2][0][:-5])])
    msg = load_error(root, 'LOC_val_solution.csv')
    assert labels[2][0] in msg and 'has no label' in msg and csv in msg


def test_a_label_without_an_image(tree):
    root, labels = tree
    os.remove(os.path.join(root, 'val', labels[4][0]))
    msg = load_error(root, 'LOC_val_solution.csv')
    assert labels[4][0][:-5] in msg and 'has no image' in msg and 'LOC_val_solution.csv:' in msg


def test_an_unknown_wnid_a_duplicate_and_a_malformed_line(tree):
    root, labels = tree
    csv = os.path.join(root, 'LOC_val_solution.csv')
    original = open(csv).read()
    _edit(csv, lambda lines: lines[:1] + [lines[1].replace(labels[-1][1], 'n99999999')]
          + lines[2:])
    msg = load_error(root, 'LOC_val_solution.csv')
    assert '%s:2' % csv in msg and 'n99999999' in msg and 'not a class folder' in msg

    open(csv, 'w').write(original)
    _edit(csv, lambda lines: lines[:2] + lines[2:3] * 2 + lines[3:])
    assert 'labelled twice' in load_error(root, 'LOC_val_solution.csv')

    open(csv, 'w').write(original)
    _edit(csv, lambda lines: lines[:1] + ['ILSVRC2012_val_00000001'] + lines[2:])
    assert '%s:2: malformed' % csv in load_error(root, 'LOC_val_solution.csv')


def test_missing_label_file_and_the_hint_without_one(tree):
    root, _ = tree
    assert os.path.join(root, 'nope.csv') in load_error(root, 'nope.csv')
    with pytest.raises(DataError) as e:
        imagenet.load(DataConfig(root=root))
    assert 'data.val_labels' in str(e.value) and 'none of the 3 classes' in str(e.value)


def test_the_sorted_wnid_order_is_not_the_devkit_order():
    # What the mapping must not assume: ILSVRC2012 ID 1 is n02119789 (kit fox),
    # whereas sorted, the first of the 1,000 wnids is n01440764 (tench).
    with pytest.raises(DataError):
        val_labels.devkit_wnids('/nonexistent/meta.mat', 'gt.txt')
