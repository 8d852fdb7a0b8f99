"""Do MultiprocessIterator's decoding workers still run in parallel under the global order?

    python tools/decode_parallel.py [--workers 2] [--batches 12]

Writes a synthetic JPEG tree (256 px), then reads the same microbatches of the
global order (pfn15.data.iterator.GlobalOrderIterator, random-size crops and
flips keyed by sample) decoded in the main process (loader_workers=0, the
baseline) and by --workers MultiprocessIterator processes (forkserver, as
pfn15.train starts them), and prints images/s of both and their ratio, and
of the iterator pfn15.train used before the global order (MultiprocessIterator
over the transformed dataset, shuffled) with the same workers. Also checks
that in-process and worker decoding give the same arrays (augmentation by
sample).
"""
import argparse
import multiprocessing
import os
import tempfile
import time

import numpy


def rate(train, cfg, loader_workers, batches):
    from pfn15.data import order, transforms
    from pfn15.data.iterator import GlobalOrderIterator
    # One worker, one microbatch per update.
    plan = order.BatchPlan(cfg.batch.per_worker, len(train), per_worker=cfg.batch.per_worker)
    it = GlobalOrderIterator(train, 0, plan, 0, batches + 5,
                             transform=transforms.train_transform(cfg.data),
                             loader_workers=loader_workers)
    out = [it.next() for _ in range(3)]    # starts the pool and its imports (not timed)
    t0 = time.perf_counter()
    for _ in range(batches):
        out.append(it.next())
    seconds = time.perf_counter() - t0
    it.finalize()
    return batches * cfg.batch.per_worker / seconds, out


def rate_before(train, cfg, loader_workers, batches):
    """The iterator pfn15.train used before the global order: Chainer's own
    MultiprocessIterator over the transformed dataset, shuffled per rank."""
    import chainer
    from chainer.datasets import TransformDataset
    from pfn15.data import transforms
    ds = TransformDataset(train, transforms.train_transform(cfg.data))
    it = chainer.iterators.MultiprocessIterator(ds, cfg.batch.per_worker,
                                                n_processes=loader_workers)
    for _ in range(3):
        it.next()
    t0 = time.perf_counter()
    for _ in range(batches):
        it.next()
    seconds = time.perf_counter() - t0
    it.finalize()
    return batches * cfg.batch.per_worker / seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--batches', type=int, default=30)
    ap.add_argument('--size', type=int, default=256, help='image size of the synthetic tree')
    args = ap.parse_args()
    multiprocessing.set_start_method('forkserver', force=True)
    from pfn15 import config
    from pfn15.data import imagenet, synthetic
    root = tempfile.mkdtemp(prefix='pfn15-decode-')
    synthetic.write_tree(root, classes=4, train=64, val=1, size=args.size, seed=0)
    cfg = config.load('configs/demo.yaml', ['data.dataset=imagenet', 'data.root=' + root,
                                            'batch.per_worker=16', 'batch.global=16'])
    train = imagenet.load(cfg.data)[0]
    base, a = rate(train, cfg, 0, args.batches)
    # Two rounds, alternating, so a busy machine's drift hits both iterators alike.
    for round_ in (1, 2):
        before = rate_before(train, cfg, args.workers, args.batches)
        par, b = rate(train, cfg, args.workers, args.batches)
        same = all(numpy.array_equal(x[0], y[0]) for ba, bb in zip(a, b) for x, y in zip(ba, bb))
        print('round %d, crop 224, %d decoding workers: previous iterator %.1f img/s, global '
              'order %.1f img/s, ratio %.2f; global order in-process %.1f img/s; workers and '
              'in-process give identical arrays: %s (cpus: %d)'
              % (round_, args.workers, before, par, par / before, base, same, os.cpu_count()))


if __name__ == '__main__':
    main()
