"""The packed format: a data set as a few large shard files, read by offset.

    python -m pfn15.data pack SRC OUT [--val-labels F | --train-list F --val-list F]
    python -m pfn15.data verify OUT
    python -m pfn15.train CONFIG data.root=OUT          (data.format=auto finds it)

OUT holds, per split (train, val):

* `<split>-00000.bin ...`: the encoded images as they were (the same JPEG
  bytes; with --max-side re-encoded), back to back, ~--shard-mb each;
* `<split>.index.npy`: one record per sample, in the listing's order --
  shard, offset, length, label, height, width, crc32 -- a structured NumPy
  array (saved and read with allow_pickle=False);
* `<split>.paths.npy`: the source paths, read only to name a sample in an
  error message;

and `manifest.json` (classes, counts, shards, fingerprint), written last: a
pack without it is unfinished, and `pack` run again resumes it (finished
shards are kept; each shard is written to a .partial file, renamed when whole).

Why: at 1,024 ranks an epoch every ~10 s is ~128 k file opens and stats per
second against a parallel file system's metadata servers, and listing 1,000
folders at every start. Packed, a decoding process opens each shard once and
reads samples with os.pread; start-up reads one index and stats the shards.

The samples keep the listing's order and labels, so the global sample order
and the per-sample augmentation see the same images at the same indices: a
packed run trains exactly as the run on the folders it was packed from. The
manifest's fingerprint is the one the folder listing has (the same paths and
labels; --max-side makes it differ), so checkpoints carry over between them.
"""
import hashlib
import io
import json
import math
import os
import sys
import time
import zlib

import numpy

from pfn15.data import DataError

FORMAT = 'pfn15-packed'
VERSION = 1
MANIFEST = 'manifest.json'
PLAN = 'pack-plan.json'
SPLITS = ('train', 'val')
INDEX_DTYPE = numpy.dtype([('shard', '<u4'), ('offset', '<u8'), ('length', '<u4'),
                           ('label', '<i4'), ('height', '<u4'), ('width', '<u4'),
                           ('crc32', '<u4')])


def is_packed(root):
    return bool(root) and os.path.isfile(os.path.join(root, MANIFEST))


def shard_name(split, k):
    return '%s-%05d.bin' % (split, k)


# ---------------------------------------------------------------- reading

class MissingData(FileNotFoundError):
    """A shard or a sample's bytes are not there: missing data (exit 2), not a corrupt image."""

    def __str__(self):
        return self.args[0]


class CorruptSample(OSError):
    """A sample's bytes do not match their checksum: a bad image (replaced, counted)."""


_fds = {}   # (pid, shard path) -> file descriptor: one open per shard per process


def _fd(path):
    key = (os.getpid(), path)
    fd = _fds.get(key)
    if fd is None:
        fd = _fds[key] = os.open(path, os.O_RDONLY)
    return fd


class Sample:
    """Where one sample's bytes are; what the transforms get instead of a path."""

    __slots__ = ('root', 'split', 'index', 'shard', 'offset', 'length', 'crc32')

    def __init__(self, root, split, index, shard, offset, length, crc32):
        self.root, self.split, self.index = root, split, index
        self.shard, self.offset, self.length, self.crc32 = shard, offset, length, crc32

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state):
        for k, v in zip(self.__slots__, state):
            setattr(self, k, v)

    @property
    def shard_path(self):
        return os.path.join(self.root, shard_name(self.split, self.shard))

    def source(self):
        """The file the sample was packed from (for messages)."""
        try:
            paths = numpy.load(os.path.join(self.root, '%s.paths.npy' % self.split),
                               mmap_mode='r', allow_pickle=False)
            return os.fsdecode(bytes(paths[self.index]))
        except (OSError, ValueError, IndexError):
            return '?'

    def __str__(self):
        return '%s sample %d (%s)' % (self.shard_path, self.index, self.source())

    def read(self):
        """The sample's bytes; MissingData if the shard is gone or too short,
        CorruptSample if the bytes fail their checksum."""
        path = self.shard_path
        try:
            data = os.pread(_fd(path), self.length, self.offset)
        except FileNotFoundError:
            raise MissingData('shard %s does not exist (needed for sample %d, %s)'
                              % (path, self.index, self.source())) from None
        if len(data) != self.length:
            raise MissingData('shard %s is truncated: sample %d (%s) needs bytes %d..%d, the '
                              'shard ends at %d' % (path, self.index, self.source(), self.offset,
                                                    self.offset + self.length,
                                                    os.fstat(_fd(path)).st_size))
        if zlib.crc32(data) != self.crc32:
            raise CorruptSample('checksum mismatch in %s' % path)
        return data

    def open(self):
        return io.BytesIO(self.read())


class PackedSplit:
    """Item i -> (Sample, numpy.int32 label): a dataset like imagenet.ImageList."""

    def __init__(self, root, split, shard, offset, length, labels, crc32, source_index=None):
        self.root, self.split = root, split
        self.shard, self.offset, self.length = shard, offset, length
        self._labels = numpy.asarray(labels, numpy.int32)
        self.crc32 = crc32
        # With data.classes=N: item i is sample source_index[i] of the pack.
        self.source_index = source_index

    def __len__(self):
        return len(self._labels)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self.get_example(i)

    def get_example(self, i):
        k = int(i) if self.source_index is None else int(self.source_index[i])
        return (Sample(self.root, self.split, k, int(self.shard[i]), int(self.offset[i]),
                       int(self.length[i]), int(self.crc32[i])), self._labels[i])

    @property
    def labels(self):
        return self._labels


def read_manifest(root):
    path = os.path.join(root, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError('cannot read the pack manifest %s: %s' % (path, e)) from None
    if manifest.get('format') != FORMAT or manifest.get('version') != VERSION:
        raise DataError('%s is not a %s v%d manifest' % (path, FORMAT, VERSION))
    return manifest


def read_index(root, split):
    path = os.path.join(root, '%s.index.npy' % split)
    try:
        index = numpy.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError('cannot read the pack index %s: %s' % (path, e)) from None
    if index.dtype != INDEX_DTYPE or index.ndim != 1:
        raise DataError('%s is not a pack index (dtype %s)' % (path, index.dtype))
    return index


def check_shards(root, split, index, shards):
    """DataError naming the shard and the first sample that is not there (one stat a shard)."""
    if not len(index):
        return
    shard = index['shard']
    ends = index['offset'] + index['length']
    last = numpy.full(len(shards), -1, numpy.int64)   # each shard's sample that ends last
    if numpy.all(shard[1:] >= shard[:-1]):
        # What pack writes: consecutive samples per shard, offsets increasing.
        starts = numpy.flatnonzero(numpy.r_[True, shard[1:] != shard[:-1]])
        stops = numpy.r_[starts[1:], len(index)] - 1
        last[shard[starts]] = stops
    else:
        order = numpy.lexsort((ends, shard))
        tail = numpy.flatnonzero(numpy.r_[shard[order][1:] != shard[order][:-1], True])
        last[shard[order][tail]] = order[tail]
    for k, name in enumerate(shards):
        i = int(last[k])
        if i < 0:
            continue
        path = os.path.join(root, name)
        try:
            size = os.stat(path).st_size
        except OSError:
            first = int(numpy.argmax(index['shard'] == k))
            raise DataError('shard %s does not exist (samples from %d on, the first %s); '
                            'is the whole pack on this node?'
                            % (path, first, Sample(root, split, first, k, 0, 0, 0).source()))
        if size < ends[i]:
            in_shard = numpy.nonzero((index['shard'] == k) & (ends > size))[0]
            j = int(in_shard[0])
            raise DataError('shard %s is truncated: %d bytes, but sample %d (%s) ends at %d'
                            % (path, size, j, Sample(root, split, j, k, 0, 0, 0).source(),
                               int(ends[j])))


def load(data_cfg):
    """Rank 0: ({name: array}, meta) of the pack at data_cfg.root (as pfn15.data._load)."""
    root = data_cfg.root
    manifest = read_manifest(root)
    names = list(manifest['classes'])
    n = data_cfg.classes or len(names)
    if n > len(names):
        raise DataError('data.classes=%d, but the pack %s has only %d classes'
                        % (n, root, len(names)))
    arrays = {}
    for split in SPLITS:
        index = read_index(root, split)
        expected = manifest['counts'][split]
        if len(index) != expected:
            raise DataError('%s.index.npy of %s has %d samples, the manifest says %d'
                            % (split, root, len(index), expected))
        check_shards(root, split, index, manifest['shards'][split])
        keep = None
        if n < len(names):
            keep = numpy.nonzero(index['label'] < n)[0]
            index = index[keep]
            if split == 'val' and not len(index):
                raise DataError('the pack %s has no validation image of the %d classes in use'
                                % (root, n))
        for field in ('shard', 'offset', 'length', 'label', 'crc32'):
            column = index[field]
            # Narrower where the values fit: fewer bytes to broadcast to every rank.
            narrow = {'shard': numpy.uint16, 'offset': numpy.uint32}.get(field)
            if narrow is not None and len(column) and column.max() <= numpy.iinfo(narrow).max:
                column = column.astype(narrow)
            arrays['%s_%s' % (split, field)] = numpy.ascontiguousarray(column)
        arrays['%s_keep' % split] = keep
    fingerprint = manifest['fingerprint']
    if n < len(names):
        fingerprint = _subset_fingerprint(root, arrays, names[:n], manifest)
    kept = {k: v for k, v in arrays.items() if not k.endswith('_keep')}
    for split in SPLITS:
        # Sample indices of the original pack (for paths.npy): the kept positions.
        if arrays['%s_keep' % split] is not None:
            kept['%s_source_index' % split] = arrays['%s_keep' % split].astype(numpy.int64)
    meta = {'classes': n, 'in_channels': 3, 'class_names': names[:n],
            'train_size': len(kept['train_label']), 'val_size': len(kept['val_label']),
            'fingerprint': fingerprint}
    return kept, meta


def _subset_fingerprint(root, arrays, names, manifest):
    """The fingerprint the folder listing of the first classes has (data.classes=N)."""
    from pfn15 import data
    listing = {}
    for split in SPLITS:
        paths = numpy.load(os.path.join(root, '%s.paths.npy' % split), allow_pickle=False)
        keep = arrays['%s_keep' % split]
        listing['%s_paths' % split] = numpy.array(paths[keep].tolist(), dtype=bytes)
        listing['%s_labels' % split] = arrays['%s_label' % split]
    h = data.fingerprint(listing, names)
    if manifest.get('max_side'):
        h = hashlib.sha256(('%s max_side=%d' % (h, manifest['max_side'])).encode()).hexdigest()
    return h


def datasets(root, arrays):
    """(train, val) PackedSplits from the broadcast arrays (every rank)."""
    return tuple(PackedSplit(root, split, arrays[split + '_shard'], arrays[split + '_offset'],
                             arrays[split + '_length'], arrays[split + '_label'],
                             arrays[split + '_crc32'], arrays.get(split + '_source_index'))
                 for split in SPLITS)


# ---------------------------------------------------------------- writing

def plan_shards(sizes, shard_bytes):
    """[(first, end)] sample ranges of consecutive samples, each about shard_bytes."""
    total = int(sum(sizes))
    count = max(1, int(math.ceil(total / float(shard_bytes)))) if len(sizes) else 0
    if not count:
        return []
    cum = numpy.cumsum(sizes)
    bounds = [0]
    for k in range(1, count):
        bounds.append(int(numpy.searchsorted(cum, total * k / count)))
    bounds.append(len(sizes))
    ranges = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return ranges


def _reencode(data, max_side, quality):
    from PIL import Image
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if max(w, h) <= max_side:
            return data
        scale = max_side / float(max(w, h))
        size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
        img.draft('RGB', size)
        img = img.convert('RGB').resize(size, Image.BILINEAR)
        out = io.BytesIO()
        img.save(out, 'JPEG', quality=quality)
        return out.getvalue()


def _header_size(data):
    """(height, width) from the image header; (0, 0) if unreadable (a bad image:
    the trainer replaces it, as it would from the folders)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size[1], img.size[0]
    except Exception:   # noqa: BLE001 -- any undecodable header is a bad image
        return 0, 0


_progress = None


class _Count:
    """multiprocessing.Value's interface, for packing in this process."""

    def __init__(self, value):
        self.value = value

    def get_lock(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _init_worker(counter):
    global _progress
    _progress = counter


def pack_shard(job):
    """Write one shard (a worker process): its .bin (via .partial) and its .idx.npy."""
    out, split, k, files, labels, max_side, quality = job
    name = shard_name(split, k)
    final = os.path.join(out, name)
    idx_path = os.path.join(out, '%s.%05d.idx.npy' % (split, k))
    index = numpy.zeros(len(files), INDEX_DTYPE)
    offset = 0
    with open(final + '.partial', 'wb') as f:
        for i, (path, label) in enumerate(zip(files, labels)):
            try:
                with open(path, 'rb') as src:
                    data = src.read()
            except OSError as e:
                return 'cannot read %s: %s (missing data; nothing packed from it)' % (
                    path, e.strerror or e)
            if max_side:
                try:
                    data = _reencode(data, max_side, quality)
                except Exception:   # noqa: BLE001 -- a bad image stays as it was
                    pass
            h, w = _header_size(data)
            index[i] = (k, offset, len(data), label, h, w, zlib.crc32(data))
            f.write(data)
            offset += len(data)
            if _progress is not None and i % 16 == 15:
                with _progress.get_lock():
                    _progress.value += 16
        f.flush()
        os.fsync(f.fileno())
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += len(files) % 16
    os.replace(final + '.partial', final)
    numpy.save(idx_path + '.partial.npy', index, allow_pickle=False)
    os.replace(idx_path + '.partial.npy', idx_path)
    return None


def _shard_done(out, split, k, count):
    idx_path = os.path.join(out, '%s.%05d.idx.npy' % (split, k))
    try:
        index = numpy.load(idx_path, allow_pickle=False)
        size = os.path.getsize(os.path.join(out, shard_name(split, k)))
    except (OSError, ValueError):
        return False
    return (len(index) == count and index.dtype == INDEX_DTYPE
            and size == int(index['length'].sum()))


class Progress:
    """A bar on a terminal; a plain line every ~10% (and at the end) otherwise."""

    def __init__(self, total, stream=sys.stdout):
        self.total, self.stream = max(1, total), stream
        self.tty = stream.isatty()
        self.start = time.time()
        self.shown = -1

    def show(self, done, final=False):
        frac = min(1.0, done / float(self.total))
        elapsed = time.time() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.tty:
            bar = '#' * int(frac * 30)
            self.stream.write('\rpack: [%-30s] %5.1f%% %d/%d images, %.0f img/s'
                              % (bar, 100 * frac, done, self.total, rate))
            if final:
                self.stream.write('\n')
        else:
            step = int(frac * 10)
            if step == self.shown:
                return
            self.shown = step
            self.stream.write('pack: %d/%d images (%.0f%%), %.0f img/s, %.0f s\n'
                              % (done, self.total, 100 * frac, rate, elapsed))
        self.stream.flush()


def plan(data_cfg, shard_mb=1024, max_side=0, quality=90):
    """(plan, {split: listing}, class names) of packing `data_cfg`'s listing: which
    consecutive samples go to which shard. A function of the listing and the
    options alone, so an interrupted pack resumes on the same plan."""
    from pfn15 import data
    from pfn15.data import imagenet
    train, val, meta = imagenet.load(data_cfg)
    names = list(meta['class_names'])
    listing = {'train_paths': train.paths, 'train_labels': train.labels,
               'val_paths': val.paths, 'val_labels': val.labels}
    fingerprint = data.fingerprint(listing, names)
    if max_side:
        fingerprint = hashlib.sha256(('%s max_side=%d' % (fingerprint, max_side)).encode()
                                     ).hexdigest()
    splits = {'train': train, 'val': val}
    ranges = {}
    for split, ds in splits.items():
        sizes = []
        for i in range(len(ds)):
            p = ds.get_example(i)[0]
            try:
                sizes.append(os.stat(p).st_size)
            except OSError as e:
                raise DataError('cannot read %s: %s (missing data)' % (p, e.strerror or e))
        ranges[split] = plan_shards(sizes, shard_mb * 2 ** 20)
    the_plan = {'fingerprint': fingerprint, 'shard_mb': shard_mb, 'max_side': max_side,
                'quality': quality, 'ranges': ranges}
    # As it reads back from JSON (tuples become lists), to compare with a saved plan.
    return json.loads(json.dumps(the_plan)), splits, names


def shard_job(out, the_plan, splits, split, k):
    """The arguments of pack_shard for shard k of `split`."""
    a, b = the_plan['ranges'][split][k]
    ds = splits[split]
    return (out, split, k, [ds.get_example(i)[0] for i in range(a, b)],
            [int(ds.labels[i]) for i in range(a, b)], the_plan['max_side'], the_plan['quality'])


def pack(data_cfg, out, shard_mb=1024, workers=1, max_side=0, quality=90, stream=sys.stdout):
    """Pack the listing of `data_cfg` (as training would list it) into `out`.

    Returns the manifest. Raises DataError on bad input (one line)."""
    import multiprocessing
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError('%s exists and is not a directory' % out)
    plan_, splits, names = plan(data_cfg, shard_mb, max_side, quality)
    fingerprint = plan_['fingerprint']
    plans = plan_['ranges']
    os.makedirs(out, exist_ok=True)
    plan_path = os.path.join(out, PLAN)
    present = [f for f in os.listdir(out) if not f.startswith('.')]
    if os.path.isfile(os.path.join(out, MANIFEST)):
        m = read_manifest(out)
        if m['fingerprint'] == fingerprint:
            stream.write('pack: %s is already a finished pack of this data; nothing to do\n'
                         % out)
            return m
        raise DataError('%s already holds a pack of other data (fingerprint %s..., this data '
                        '%s...); choose an empty or new folder' % (out, m['fingerprint'][:12],
                                                                   fingerprint[:12]))
    if os.path.isfile(plan_path):
        with open(plan_path) as f:
            old = json.load(f)
        if old != plan_:
            raise DataError('%s holds an unfinished pack of other data or options (%s); '
                            'finish it with the same command, or choose an empty folder'
                            % (out, plan_path))
        resumed = True
    elif present:
        raise DataError('%s is not empty (%d entries: %s); choose an empty or new folder'
                        % (out, len(present), ', '.join(sorted(present)[:3])))
    else:
        with open(plan_path + '.partial', 'w') as f:
            json.dump(plan_, f)
        os.replace(plan_path + '.partial', plan_path)
        resumed = False

    jobs, done_images, total = [], 0, 0
    for split, ds in splits.items():
        for k, (a, b) in enumerate(plans[split]):
            total += b - a
            if resumed and _shard_done(out, split, k, b - a):
                done_images += b - a
                continue
            jobs.append(shard_job(out, plan_, splits, split, k))
    if resumed:
        stream.write('pack: resuming %s: %d of %d shards already written\n'
                     % (out, sum(len(r) for r in plans.values()) - len(jobs),
                        sum(len(r) for r in plans.values())))
    progress = Progress(total, stream)
    errors = []
    if jobs and workers <= 1:
        # In this process: no pool to start for a small or a one-core pack.
        global _progress
        _progress = _Count(done_images)
        try:
            for job in jobs:
                err = pack_shard(job)
                if err:
                    errors.append(err)
                progress.show(_progress.value)
        finally:
            _progress = None
    elif jobs:
        ctx = multiprocessing.get_context('spawn')
        counter = ctx.Value('q', done_images)
        with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker,
                      initargs=(counter,)) as pool:
            pending = pool.imap_unordered(pack_shard, jobs)
            while True:
                try:
                    err = pending.next(timeout=0.5)
                except multiprocessing.TimeoutError:
                    progress.show(counter.value)
                    continue
                except StopIteration:
                    break
                if err:
                    errors.append(err)
                progress.show(counter.value)
    progress.show(total, final=True)
    if errors:
        raise DataError(sorted(errors)[0])

    manifest = {'format': FORMAT, 'version': VERSION, 'classes': names,
                'counts': {s: len(ds) for s, ds in splits.items()},
                'per_class': {s: numpy.bincount(ds.labels, minlength=len(names)).tolist()
                              for s, ds in splits.items()},
                'shards': {s: [shard_name(s, k) for k in range(len(plans[s]))]
                           for s in splits},
                'fingerprint': fingerprint, 'max_side': max_side,
                'source': os.path.abspath(data_cfg.root)}
    total_bytes = 0
    for split, ds in splits.items():
        parts = [numpy.load(os.path.join(out, '%s.%05d.idx.npy' % (split, k)),
                            allow_pickle=False) for k in range(len(plans[split]))]
        index = numpy.concatenate(parts) if parts else numpy.zeros(0, INDEX_DTYPE)
        total_bytes += int(index['length'].sum())
        numpy.save(os.path.join(out, '%s.index.npy' % split), index, allow_pickle=False)
        numpy.save(os.path.join(out, '%s.paths.npy' % split), ds.paths, allow_pickle=False)
    manifest['bytes'] = total_bytes
    with open(os.path.join(out, MANIFEST + '.partial'), 'w') as f:
        json.dump(manifest, f, indent=1)
    os.replace(os.path.join(out, MANIFEST + '.partial'), os.path.join(out, MANIFEST))
    for split in splits:
        for k in range(len(plans[split])):
            os.remove(os.path.join(out, '%s.%05d.idx.npy' % (split, k)))
    os.remove(plan_path)
    return manifest


def verify(root, decode=False):
    """[problem lines] of the pack at `root`: every shard there and whole, every
    sample's checksum (and, with decode, its header size); [] if sound."""
    problems = []
    manifest = read_manifest(root)
    for split in SPLITS:
        index = read_index(root, split)
        if len(index) != manifest['counts'][split]:
            problems.append('%s.index.npy has %d samples, the manifest says %d'
                            % (split, len(index), manifest['counts'][split]))
        if len(index) and index['label'].max() >= len(manifest['classes']):
            problems.append('%s.index.npy has labels beyond the %d classes'
                            % (split, len(manifest['classes'])))
        try:
            check_shards(root, split, index, manifest['shards'][split])
        except DataError as e:
            problems.append(str(e))
            continue
        for i in range(len(index)):
            r = index[i]
            s = Sample(root, split, i, int(r['shard']), int(r['offset']), int(r['length']),
                       int(r['crc32']))
            try:
                data = s.read()
            except (MissingData, CorruptSample) as e:
                problems.append('%s: %s' % (s, e))
                continue
            if decode and _header_size(data) != (int(r['height']), int(r['width'])):
                problems.append('%s: its header does not give the indexed size %dx%d'
                                % (s, r['width'], r['height']))
            if len(problems) >= 20:
                return problems
    return problems
