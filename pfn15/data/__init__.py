"""Datasets: ImageNet (class folders, list files or packed), synthetic JPEG trees, digits.

`build(cfg, comm)` is the one entry. Rank 0 alone lists the data (listing
ImageNet from 1,024 ranks at once would hammer the file system) and
broadcasts the listing as a few NumPy buffers (paths as one fixed-width bytes
array, labels as int32; digits as their float32 images): no pickled Python
strings. Every rank then holds the *whole* training index, because the
global sample order (pfn15.data.order) may hand any sample to any rank; the
validation set is split into contiguous per-rank shares, and the evaluator
sums over them.

Rank 0 also fingerprints the listing (sha256 over the paths, labels, class
names and sizes; for digits, over the arrays), so a checkpoint can refuse to
resume on different data.
"""
import hashlib

import numpy

from pfn15 import errors


class DataError(errors.UserError, ValueError):
    """Bad data: a missing root, a malformed list line, too few classes... (one readable line;
    exit 2). Met by one rank alone unless marked `collective` (raised on every rank)."""

    collective = False


def build(cfg, comm):
    """(train, val, meta) for this rank.

    train: the whole training set (every rank), untransformed -- the training
    iterator (pfn15.data.iterator) applies the transform keyed by sample.
    val: this rank's share of the validation set, transformed.
    meta: classes, in_channels, train_size, val_size, class_names, fingerprint.
    """
    from pfn15.data import order
    payload = error = None
    if comm.rank == 0:
        try:
            payload = _load(cfg)
        except DataError as e:
            error = e
    # Rank 0's verdict reaches every rank, so a data error stops all of them
    # with one message instead of leaving the others waiting for the listing.
    error = comm.mpi_comm.bcast(error, root=0)
    if error is not None:
        raise error
    arrays, meta = bcast_arrays(comm.mpi_comm, payload)
    train, val = _datasets(cfg, arrays)
    lo, hi = order.validation_share(len(val), comm.size, comm.rank, cfg.batch.per_worker)
    from chainer.datasets import SubDataset, TransformDataset
    val = SubDataset(val, lo, hi)
    if cfg.data.decodes_files and cfg.data.decoder != 'dali':
        # digits are arrays, normalized at load; DALI decodes validation batches itself
        from pfn15.data import transforms
        t = transforms.val_transform(cfg.data)
        t.warn = False   # the trainer names bad files once, from rank 0 (health.Reporter)
        val = TransformDataset(val, t)
    return train, val, meta


def train_transform(cfg):
    """The transform the training iterator applies (None for digits)."""
    if cfg.data.dataset == 'digits':
        return None
    from pfn15.data import transforms
    t = transforms.train_transform(cfg.data, seed=cfg.seed)
    t.warn = False   # the trainer names bad files once, from rank 0 (health.Reporter)
    return t


def dali_decoders(cfg, device_id=None):
    """(train decoder, val decoder) for data.decoder=dali (pfn15.data.dali): DALI on
    GPU `device_id` (nvJPEG), or in its CPU-only mode with None."""
    from pfn15.data import dali, transforms
    threads = max(1, cfg.data.loader_workers)
    decoders = []
    for t, train in ((train_transform(cfg), True), (transforms.val_transform(cfg.data), False)):
        t.warn = False   # the trainer names bad files once, from rank 0 (health.Reporter)
        decoders.append(dali.Decoder(t, cfg.batch.per_worker, threads, device_id, train))
    return tuple(decoders)


# ---------------------------------------------------------------- rank 0

def _load(cfg):
    """({name: array}, meta) of the listing; rank 0 only."""
    if cfg.data.dataset == 'digits':
        from pfn15.data import digits
        train, val, meta = digits.load(cfg.data, seed=cfg.seed)
        arrays = {'train_x': train._datasets[0], 'train_y': train._datasets[1],
                  'val_x': val._datasets[0], 'val_y': val._datasets[1]}
        names = [str(c) for c in range(meta['classes'])]
    elif packed_format(cfg.data):
        from pfn15.data import packed
        # The manifest gives the fingerprint: no listing, no hashing of paths.
        return packed.load(cfg.data)
    else:
        from pfn15.data import imagenet
        train, val, meta = imagenet.load(cfg.data)
        note = meta.pop('note', None)
        if note:
            print('pfn15: note: %s' % note, flush=True)
        arrays = {'train_paths': train.paths, 'train_labels': train.labels,
                  'val_paths': val.paths, 'val_labels': val.labels}
        names = list(meta['class_names'])
    meta = dict(meta, train_size=len(train), val_size=len(val), class_names=names)
    meta['fingerprint'] = fingerprint(arrays, names)
    return arrays, meta


def packed_format(data_cfg):
    """Whether data.root is read as a pack (pfn15.data.packed): data.format=packed,
    or auto and data.root holds a pack's manifest.json."""
    from pfn15.data import packed
    if data_cfg.format == 'packed':
        if not packed.is_packed(data_cfg.root):
            raise DataError('data.format=packed, but data.root=%s has no %s (make one with '
                            'python -m pfn15.data pack SRC %s)'
                            % (data_cfg.root, packed.MANIFEST, data_cfg.root or 'OUT'))
        return True
    return data_cfg.format == 'auto' and packed.is_packed(data_cfg.root)


def fingerprint(arrays, class_names):
    """sha256 (hex) of the listing: what makes a checkpoint's data this data."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = numpy.ascontiguousarray(arrays[name])
        h.update(('%s %s %s;' % (name, a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    h.update('\n'.join(class_names).encode('utf-8'))
    return h.hexdigest()


def bcast_arrays(mpi_comm, payload, root=0):
    """Broadcast ({name: ndarray}, meta) from `root`: the shapes and dtypes as a
    small pickle, each array's buffer with one MPI Bcast (no pickling of the data)."""
    rank = mpi_comm.Get_rank()
    if rank == root:
        arrays, meta = payload
        # (not ascontiguousarray: it turns a 0-d array into a 1-d one)
        arrays = {k: numpy.array(v, copy=not v.flags.c_contiguous) for k, v in arrays.items()}
        # Object arrays (a None a serializer stored) are tiny: they ride in the pickle.
        objects = {k: v for k, v in arrays.items() if v.dtype.hasobject}
        header = ({k: (v.dtype.str, v.shape) for k, v in arrays.items()
                   if not v.dtype.hasobject}, objects, meta)
    else:
        header = None
    specs, objects, meta = mpi_comm.bcast(header, root=root)
    out = dict(objects)
    for name in sorted(specs):
        dtype, shape = specs[name]
        buf = arrays[name] if rank == root else numpy.empty(shape, numpy.dtype(dtype))
        if buf.size:
            # Through a uint8 view: MPI needs no datatype for fixed-width bytes.
            mpi_comm.Bcast(buf.reshape(-1).view(numpy.uint8), root=root)
        out[name] = buf
    return out, meta


# ---------------------------------------------------------------- every rank

def _datasets(cfg, arrays):
    if cfg.data.dataset == 'digits':
        from chainer.datasets import TupleDataset
        return (TupleDataset(arrays['train_x'], arrays['train_y']),
                TupleDataset(arrays['val_x'], arrays['val_y']))
    if 'train_shard' in arrays:
        from pfn15.data import packed
        return packed.datasets(cfg.data.root, arrays)
    from pfn15.data.imagenet import ImageList
    root = cfg.data.root
    return (ImageList.from_arrays(root, arrays['train_paths'], arrays['train_labels']),
            ImageList.from_arrays(root, arrays['val_paths'], arrays['val_labels']))
