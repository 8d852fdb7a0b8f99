"""Datasets: ImageNet (class folders or list files), synthetic JPEG trees, digits.

`build(cfg, comm)` is the one entry: rank 0 alone lists the data (listing
ImageNet from 1,024 ranks at once would hammer the file system), then
ChainerMN's `scatter_dataset` hands each rank its share of the indices, and
each rank wraps its share in the train or validation transform.
"""
import chainermn
from chainer.datasets import TransformDataset


class DataError(ValueError):
    """Bad data: a missing root, a malformed list line, too few classes... (one readable line)."""


def build(cfg, comm):
    """(train, val, meta) for this rank; meta: classes, in_channels, train_size, val_size."""
    train = val = meta = error = None
    if comm.rank == 0:
        try:
            train, val, meta = _load(cfg)
        except DataError as e:
            error = e
    # Rank 0's verdict reaches every rank, so a data error stops all of them
    # with one message instead of leaving the others waiting in scatter.
    error, meta = comm.bcast_obj((error, meta) if comm.rank == 0 else None)
    if error is not None:
        raise error
    # Every sample to exactly one rank (no padding): shares differ by at most
    # one sample, and the trainer counts epochs globally (GlobalEpochs).
    train = chainermn.scatter_dataset(train, comm, shuffle=True, seed=cfg.seed,
                                      force_equal_length=False)
    val = chainermn.scatter_dataset(val, comm, force_equal_length=False)
    if cfg.data.dataset != 'digits':   # digits are arrays, normalized at load
        from pfn15.data import transforms
        train = TransformDataset(train, transforms.train_transform(cfg.data))
        val = TransformDataset(val, transforms.val_transform(cfg.data))
    return train, val, meta


def _load(cfg):
    if cfg.data.dataset == 'digits':
        from pfn15.data import digits
        train, val, meta = digits.load(cfg.data, seed=cfg.seed)
    else:
        from pfn15.data import imagenet
        train, val, meta = imagenet.load(cfg.data)
    return train, val, dict(meta, train_size=len(train), val_size=len(val))
