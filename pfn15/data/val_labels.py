"""Labels of a flat validation folder: ILSVRC2012 as downloaded.

Every copy of ILSVRC2012 (the image-net.org tars, Kaggle's "ImageNet Object
Localization Challenge") has `train/<wnid>/*.JPEG` but a flat `val/` of
`ILSVRC2012_val_00000001.JPEG ...`, its labels in a separate file.
`data.val_labels=FILE` (relative to data.root unless absolute) reads, by
its content:

* Kaggle's `LOC_val_solution.csv`: a header `ImageId,PredictionString`,
  then `ILSVRC2012_val_00008726,n02119789 255 142 454 329 ...` -- the first
  token of the prediction string is the wnid;
* plain `filename wnid` lines (`ILSVRC2012_val_00000001.JPEG n01751748`;
  the extension may be left out), blank lines and `#` comments skipped;
* the devkit's `ILSVRC2012_validation_ground_truth.txt`: one ILSVRC2012 ID
  (1..1000) per line, line i for `ILSVRC2012_val_<i, 8 digits>.JPEG`. The
  IDs are not the sorted-wnid order of the classes (ID 1 is n02119789, kit
  fox; sorted, the first wnid is n01440764, tench), so the devkit's own
  table is read: `meta.mat` next to the file (as in the devkit's data/), a
  MATLAB v5 file that SciPy (installed with scikit-learn) reads.

Each label's wnid must be a class folder of train/. Every mismatch -- an
image without a label, a label without an image, an unknown wnid, two
labels for one image -- is a DataError naming the file and line.
"""
import csv
import os

from pfn15.data import DataError

# The devkit's ILSVRC2012 IDs of the 1,000 classes (the leaves of meta.mat).
DEVKIT_IDS = 1000


def flat_listing(data_cfg, val_dir, all_names, label_of, ignored):
    """(paths relative to data.root, labels) of the flat `val_dir`, sorted by name."""
    from pfn15.data import imagenet
    path = data_cfg.val_labels
    if not os.path.isabs(path):
        path = os.path.join(data_cfg.root, path)
    entries = read(path)                         # [(stem, wnid, line)]
    names = imagenet._images_in(val_dir, ignored, what='validation folder')
    by_stem = {}
    for name in names:
        by_stem[os.path.splitext(name)[0]] = name
    known = set(all_names)
    labelled = {}
    for stem, wnid, n in entries:
        if wnid not in known:
            raise DataError('%s:%d: wnid %s of %s is not a class folder of %s'
                            % (path, n, wnid, stem, os.path.join(data_cfg.root, 'train')))
        if stem in labelled:
            raise DataError('%s:%d: %s is labelled twice (first on line %d)'
                            % (path, n, stem, labelled[stem][1]))
        if stem not in by_stem:
            raise DataError('%s:%d: %s has no image in %s (a label without an image)'
                            % (path, n, stem, val_dir))
        labelled[stem] = (wnid, n)
    for stem in sorted(by_stem):
        if stem not in labelled:
            raise DataError('%s has no label in %s (an image without a label; %d images, '
                            '%d labels)' % (os.path.join(val_dir, by_stem[stem]), path,
                                            len(by_stem), len(labelled)))
    paths, labels = [], []
    for stem in sorted(by_stem):
        wnid = labelled[stem][0]
        if wnid in label_of:                     # data.classes keeps the first N
            paths.append('%s/%s' % (os.path.basename(val_dir), by_stem[stem]))
            labels.append(label_of[wnid])
    if not paths:
        raise DataError('%s labels none of %s with the %d classes in use'
                        % (path, val_dir, len(label_of)))
    return paths, labels


def read(path):
    """[(image name without extension, wnid, line number)] of a label file."""
    try:
        with open(path, encoding='utf-8', newline='') as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataError('%s: not a UTF-8 text label file (%s)' % (path, e.reason)) from None
    except OSError as e:
        raise DataError('cannot read data.val_labels %s: %s' % (path, e.strerror or e)) from None
    lines = text.splitlines()
    first = next((s.strip() for s in lines if s.strip()), '')
    if not first:
        raise DataError('label file %s is empty' % path)
    if first.replace(' ', '').startswith('ImageId,PredictionString'):
        entries = _kaggle(path, lines)
    elif all(s.strip().isdigit() for s in lines if s.strip()):
        entries = _devkit(path, lines)
    else:
        entries = _plain(path, lines)
    if not entries:
        raise DataError('label file %s has no labels' % path)
    return entries


def _stem(name):
    base = os.path.basename(name)
    root, ext = os.path.splitext(base)
    return root if ext.lower() in ('.jpeg', '.jpg', '.png') else base


def _kaggle(path, lines):
    entries = []
    rows = csv.reader(lines)
    next(rows)                                   # the header
    for n, row in enumerate(rows, 2):
        if not row or not ''.join(row).strip():
            continue
        if len(row) != 2 or not row[1].split():
            raise DataError('%s:%d: malformed line %r; expected "ImageId,wnid x0 y0 x1 y1 ..."'
                            % (path, n, ','.join(row)))
        entries.append((_stem(row[0].strip()), row[1].split()[0], n))
    return entries


def _plain(path, lines):
    entries = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith('#'):
            continue
        parts = s.split()
        if len(parts) != 2:
            raise DataError('%s:%d: malformed line %r; expected "ILSVRC2012_val_00000001.JPEG '
                            'n01751748" (file name, wnid)' % (path, n, s))
        entries.append((_stem(parts[0]), parts[1], n))
    return entries


def _devkit(path, lines):
    meta = os.path.join(os.path.dirname(path), 'meta.mat')
    wnid_of = devkit_wnids(meta, path)
    entries, i = [], 0
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        i += 1
        ilsvrc_id = int(s)
        if ilsvrc_id not in wnid_of:
            raise DataError('%s:%d: ILSVRC2012 ID %d is not one of the %d classes of %s'
                            % (path, n, ilsvrc_id, len(wnid_of), meta))
        entries.append(('ILSVRC2012_val_%08d' % i, wnid_of[ilsvrc_id], n))
    return entries


def devkit_wnids(meta, labels_path):
    """{ILSVRC2012 ID: wnid} of the devkit's meta.mat (IDs 1..1000, the leaves)."""
    if not os.path.isfile(meta):
        raise DataError('%s holds devkit IDs (1..1000), which need the devkit\'s meta.mat '
                        'beside it to map to wnids (not found: %s); the IDs are not the '
                        'sorted-wnid order' % (labels_path, meta))
    try:
        import scipy.io
        synsets = scipy.io.loadmat(meta, squeeze_me=True)['synsets']
        ids = [int(v) for v in synsets['ILSVRC2012_ID']]
        wnids = [str(v) for v in synsets['WNID']]
    except ImportError:
        raise DataError('reading the devkit\'s %s needs SciPy (pip install scipy)' % meta) \
            from None
    except Exception as e:   # noqa: BLE001 -- any unreadable .mat is one line
        raise DataError('%s is not the devkit\'s meta.mat (no synsets with ILSVRC2012_ID '
                        'and WNID: %s: %s)' % (meta, type(e).__name__, e)) from None
    table = {i: w for i, w in zip(ids, wnids) if 1 <= i <= DEVKIT_IDS}
    if not table:
        raise DataError('%s has no synsets with ILSVRC2012_ID 1..%d' % (meta, DEVKIT_IDS))
    return table
