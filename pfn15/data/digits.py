"""scikit-learn's handwritten digits: 1,797 real 8x8 images that ship with the package.

The demo's data: real images, no download. A stratified, seeded split gives a
validation set with every class in proportion.
"""
import numpy

from chainer.datasets import TupleDataset


def load(data_cfg, seed=0):
    """(train, val, meta): TupleDatasets of (1 x S x S float32, int32 label)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = digits.images.astype(numpy.float32) / 16.0            # 0..16 -> 0..1
    if data_cfg.image_size != 8:
        from PIL import Image
        s = data_cfg.image_size
        x = numpy.stack([numpy.asarray(Image.fromarray(im).resize((s, s), Image.BILINEAR))
                         for im in x]).astype(numpy.float32)
    x = (x - x.mean()) / x.std()
    x = x[:, None]                                            # N x 1 x S x S
    y = digits.target.astype(numpy.int32)
    classes = 10
    if data_cfg.classes:
        if data_cfg.classes > classes:
            from pfn15.data import DataError
            raise DataError('data.classes=%d, but the digits have only %d classes'
                            % (data_cfg.classes, classes))
        keep = y < data_cfg.classes
        x, y, classes = x[keep], y[keep], data_cfg.classes
    rng = numpy.random.RandomState(seed)
    val_idx = []
    for c in range(classes):
        idx = numpy.flatnonzero(y == c)
        rng.shuffle(idx)
        val_idx.extend(idx[:int(round(len(idx) * data_cfg.val_fraction))])
    is_val = numpy.zeros(len(y), bool)
    is_val[val_idx] = True
    meta = {'classes': classes, 'in_channels': 1, 'image_size': x.shape[-1]}
    return (TupleDataset(x[~is_val], y[~is_val]), TupleDataset(x[is_val], y[is_val]), meta)
