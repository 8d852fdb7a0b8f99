"""ImageNet listings: class folders or Chainer list files, as cheap (path, label) datasets.

Three layouts, as users have them:

* class folders: `root/train/<wnid>/*.JPEG` and `root/val/<wnid>/*.JPEG`;
  classes are the sorted folder names of train/, the label is the index;
* ILSVRC2012 as downloaded: class folders for train/, a flat `root/val/`
  of `ILSVRC2012_val_00000001.JPEG ...` and a label file `data.val_labels`
  (pfn15.data.val_labels reads Kaggle's LOC_val_solution.csv, plain
  `filename wnid` lines, or the devkit's ground truth with its meta.mat);
* list files (the ChainerMN ImageNet example's format): `data.train_list` and
  `data.val_list`, one `relative/path.JPEG label` line per image, paths
  relative to `data.root` unless absolute.

Only rank 0 calls `load`; `pfn15.data.build` then broadcasts the listing's
arrays to every rank, so the datasets here hold nothing but paths and labels
and decode nothing (the transforms do, in the MultiprocessIterator's workers). Every
problem found raises `DataError` with one line naming the file, line or key.
"""
import os

import numpy
from chainer.dataset import DatasetMixin

from pfn15.data import DataError

# What a class folder may hold (ImageNet's files are .JPEG); other files, such
# as a stray README or .DS_Store, are ignored.
IMAGE_EXTENSIONS = ('.jpeg', '.jpg', '.png')


class ImageList(DatasetMixin):
    """Item i -> (path: str, label: numpy.int32); no decoding.

    The paths live in one NumPy bytes array, not a list of a million Python
    strings: every rank holds the whole listing, it travels as one MPI
    buffer, and each decoding process gets a pickled copy -- a single buffer
    pickles fast and takes a third of the memory.
    """

    def __init__(self, root, paths, labels):
        self.root = root
        self._paths = numpy.array([os.fsencode(p) for p in paths], dtype=bytes)
        self._labels = numpy.asarray(labels, dtype=numpy.int32)
        if len(self._paths) != len(self._labels):
            raise ValueError('paths and labels differ in length')

    @classmethod
    def from_arrays(cls, root, paths, labels):
        """From the arrays `paths` (fixed-width bytes) and `labels` as they are."""
        self = cls.__new__(cls)
        self.root = root
        self._paths = paths
        self._labels = numpy.asarray(labels, dtype=numpy.int32)
        return self

    @property
    def paths(self):
        return self._paths

    def __len__(self):
        return len(self._labels)

    def get_example(self, i):
        # os.path.join leaves an absolute path (from a list file) as it is.
        return os.path.join(self.root, os.fsdecode(self._paths[i])), self._labels[i]

    @property
    def labels(self):
        return self._labels


def load(data_cfg):
    """(train, val, meta) from `data_cfg`; meta: classes, in_channels, class_names."""
    root = data_cfg.root
    _check_dir(root, 'data root')
    if data_cfg.train_list or data_cfg.val_list:
        if not (data_cfg.train_list and data_cfg.val_list):
            missing = 'data.val_list' if data_cfg.train_list else 'data.train_list'
            raise DataError('%s is empty; list-file datasets need both data.train_list '
                            'and data.val_list' % missing)
        if data_cfg.val_labels:
            raise DataError('data.val_labels=%s is for a flat val/ folder next to train/ class '
                            'folders; with list files, give the labels in data.val_list'
                            % data_cfg.val_labels)
        train, val, names = _from_lists(data_cfg)
        ignored = Ignored()
    else:
        ignored = Ignored()
        train, val, names = _from_folders(data_cfg, ignored)
    return train, val, {'classes': len(names), 'in_channels': 3, 'class_names': names,
                        'note': ignored.note()}


def _check_dir(path, what):
    if not path:
        raise DataError('%s is empty (set data.root)' % what)
    if not os.path.isdir(path):
        raise DataError('%s %s does not exist or is not a directory' % (what, path))
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError('%s %s is not readable (permission denied)' % (what, path))


def _keep_classes(data_cfg, available, where):
    n = data_cfg.classes or available
    if n > available:
        raise DataError('data.classes=%d, but %s has only %d classes' % (n, where, available))
    return n


# ---------------------------------------------------------------- class folders

class Ignored:
    """What the listing left out of class folders: other files and nested
    folders, counted so the user hears of them once (see `note`)."""

    def __init__(self):
        self.files = self.folders = 0
        self.example = None

    def add(self, path, folder):
        if folder:
            self.folders += 1
        else:
            self.files += 1
        self.example = self.example or path

    def note(self):
        if not (self.files or self.folders):
            return None
        return ('ignored %d non-image file(s) and %d nested folder(s) inside the image '
                'folders (only %s files are images; e.g. %s)'
                % (self.files, self.folders, '/'.join(IMAGE_EXTENSIONS), self.example))


def _images_in(folder, ignored, what='class folder'):
    """Sorted image file names in `folder`; DataError if none, unreadable, or a
    broken link (a listed image that cannot be read is missing data)."""
    names = []
    try:
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith('.'):
                    continue     # .DS_Store, ._* of macOS: never data
                image = e.name.lower().endswith(IMAGE_EXTENSIONS)
                if e.is_file():
                    if image:
                        names.append(e.name)
                    else:
                        ignored.add(e.path, False)
                elif e.is_dir():
                    ignored.add(e.path, True)
                elif e.is_symlink() and image:
                    raise DataError('%s is a broken symbolic link (its target %s does not '
                                    'exist): missing data'
                                    % (e.path, os.readlink(e.path)))
                else:
                    ignored.add(e.path, False)
    except OSError as e:
        raise DataError('cannot list %s: %s' % (folder, e.strerror or e))
    if not names:
        raise DataError('%s %s is empty (no %s files)'
                        % (what, folder, '/'.join(IMAGE_EXTENSIONS)))
    return sorted(names)


def _subfolders(path):
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if not e.name.startswith('.') and e.is_dir())
    except OSError as e:
        raise DataError('cannot list %s: %s' % (path, e.strerror or e))


def _from_folders(data_cfg, ignored):
    root = data_cfg.root
    train_dir, val_dir = os.path.join(root, 'train'), os.path.join(root, 'val')
    _check_dir(train_dir, 'training folder')
    _check_dir(val_dir, 'validation folder')
    all_names = _subfolders(train_dir)
    if not all_names:
        raise DataError('training folder %s has no class folders (expected train/<class>/*.JPEG)'
                        % train_dir)
    names = all_names[:_keep_classes(data_cfg, len(all_names), train_dir)]
    label_of = {name: i for i, name in enumerate(names)}

    def listing(split_dir, classes):
        paths, labels = [], []
        for name in classes:
            split = os.path.basename(split_dir)
            for f in _images_in(os.path.join(split_dir, name), ignored):
                paths.append('%s/%s/%s' % (split, name, f))
                labels.append(label_of[name])
        return ImageList(root, paths, labels)

    train = listing(train_dir, names)
    if data_cfg.val_labels:
        from pfn15.data import val_labels
        paths, labels = val_labels.flat_listing(data_cfg, val_dir, all_names, label_of,
                                                ignored)
        return train, ImageList(root, paths, labels), names
    known = set(all_names)
    val_names = _subfolders(val_dir)
    for name in val_names:
        if name not in known:
            raise DataError('validation class folder %s has no counterpart in %s'
                            % (os.path.join(val_dir, name), train_dir))
    val_kept = [n for n in val_names if n in label_of]
    if not val_kept:
        flat = [f for f in os.listdir(val_dir) if f.lower().endswith(IMAGE_EXTENSIONS)]
        hint = ('; it holds %d images and no class folders: the flat val/ of ILSVRC2012 as '
                'downloaded needs data.val_labels=LOC_val_solution.csv (or another label '
                'file, see docs/data.md)' % len(flat)) if flat else ''
        raise DataError('validation folder %s has none of the %d classes in use%s'
                        % (val_dir, len(names), hint))
    return train, listing(val_dir, val_kept), names


# ---------------------------------------------------------------- list files

def _list_path(root, p):
    return p if os.path.isabs(p) else os.path.join(root, p)


def _read_list(path):
    """[(path, label, line number)] of a `path label` list file."""
    entries = []
    try:
        with open(path, encoding='utf-8') as f:
            for n, line in enumerate(f, 1):
                s = line.strip()
                if not s or s.startswith('#'):
                    continue
                # rsplit: a path may hold spaces, the label is the last field.
                parts = s.rsplit(None, 1)
                if len(parts) != 2:
                    raise DataError('%s:%d: malformed line %r; expected "relative/path.JPEG label"'
                                    % (path, n, s))
                try:
                    label = int(parts[1])
                except ValueError:
                    raise DataError('%s:%d: malformed line %r; the label %r is not an integer'
                                    % (path, n, s, parts[1])) from None
                entries.append((parts[0], label, n))
    except UnicodeDecodeError as e:
        raise DataError('%s: not a UTF-8 text list file (%s)' % (path, e.reason)) from None
    except OSError as e:
        raise DataError('cannot read list file %s: %s' % (path, e.strerror or e)) from None
    if not entries:
        raise DataError('list file %s has no entries' % path)
    return entries


def _check_files_exist(root, entries, list_file):
    # One listdir per directory instead of one stat per file: on a parallel
    # file system 1.28 M stats from rank 0 take minutes, ~1,000 listdirs do not.
    seen = {}
    for p, _, n in entries:
        full = _list_path(root, p)
        folder, name = os.path.split(full)
        names = seen.get(folder)
        if names is None:
            try:
                names = seen[folder] = set(os.listdir(folder or '.'))
            except OSError:
                names = seen[folder] = set()
        if name not in names:
            raise DataError('%s:%d: file %s does not exist' % (list_file, n, full))


def _from_lists(data_cfg):
    root = data_cfg.root
    train_file = _list_path(root, data_cfg.train_list)
    val_file = _list_path(root, data_cfg.val_list)
    train, val = _read_list(train_file), _read_list(val_file)

    # The training list defines the classes: labels 0..N-1, each with images.
    counts = {}
    for p, label, n in train:
        if label < 0:
            raise DataError('%s:%d: label %d is out of range (labels start at 0)'
                            % (train_file, n, label))
        counts.setdefault(label, (p, n))
    available = max(counts) + 1
    if len(counts) != available:
        missing = [c for c in range(available) if c not in counts]
        p, n = counts[available - 1]
        raise DataError('%s:%d: label %d is out of range: labels must be 0..N-1 and %s%s '
                        'have no images' % (train_file, n, available - 1,
                                            ', '.join(map(str, missing[:3])),
                                            '...' if len(missing) > 3 else ''))
    for p, label, n in val:
        if not 0 <= label < available:
            raise DataError('%s:%d: label %d is out of range (the training list has labels '
                            '0..%d)' % (val_file, n, label, available - 1))
    classes = _keep_classes(data_cfg, available, train_file)
    train = [e for e in train if e[1] < classes]
    val = [e for e in val if e[1] < classes]
    if not val:
        raise DataError('validation list %s has no image of the %d classes in use'
                        % (val_file, classes))
    _check_files_exist(root, train, train_file)
    _check_files_exist(root, val, val_file)

    # Class names: the folder of each class's first training image (ImageNet's
    # wnid), else the label itself.
    names = []
    for c in range(classes):
        folder = os.path.basename(os.path.dirname(counts[c][0]))
        names.append(folder or str(c))

    def dataset(entries):
        return ImageList(root, [e[0] for e in entries], [e[1] for e in entries])
    return dataset(train), dataset(val), names
