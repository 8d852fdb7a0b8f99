"""Data tools: python -m pfn15.data synth OUT_DIR --classes N --train N --val N --size S
                                          [--seed K] [--list-files] [--overwrite]

Writes a synthetic ImageNet-layout tree of real JPEG files (see
pfn15/data/synthetic.py), ready for `data.root=OUT_DIR`.
"""
import argparse
import os
import shutil
import sys
import time

from pfn15.data import synthetic


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m pfn15.data',
                                     description='Data tools of pfn15.')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('synth', help='write a synthetic ImageNet-layout tree of JPEG files',
                       description='Write OUT_DIR/train/<class>/*.JPEG and OUT_DIR/val/<class>/'
                                   '*.JPEG: learnable classes (shape x colour x texture x '
                                   'background), random placement, scale and noise.')
    p.add_argument('out_dir', metavar='OUT_DIR')
    p.add_argument('--classes', type=int, default=10,
                   help='number of classes (1..%d; default 10)' % synthetic.max_classes())
    p.add_argument('--train', type=int, default=100, help='training images per class (100)')
    p.add_argument('--val', type=int, default=20, help='validation images per class (20)')
    p.add_argument('--size', type=int, default=128,
                   help='typical image side in pixels; sides vary by x0.78..x1.28 (128)')
    p.add_argument('--seed', type=int, default=0, help='the tree is a function of the seed (0)')
    p.add_argument('--list-files', action='store_true',
                   help='also write OUT_DIR/train.txt and val.txt ("path label" lines)')
    p.add_argument('--overwrite', action='store_true',
                   help='OUT_DIR may hold an earlier tree: its train/, val/, train.txt and '
                        'val.txt are deleted first (without it, a non-empty OUT_DIR is refused)')
    args = parser.parse_args(argv)

    if not 1 <= args.classes <= synthetic.max_classes():
        parser.error('--classes must be in 1..%d' % synthetic.max_classes())
    for name in ('train', 'val'):
        if getattr(args, name) < 0:
            parser.error('--%s must be >= 0' % name)
    if args.size < 8:
        parser.error('--size must be >= 8')
    if not 0 <= args.seed < 2 ** 32:
        parser.error('--seed must be in 0..2**32-1')
    error = _prepare(args.out_dir, args.overwrite)
    if error:
        print('pfn15.data synth: error: %s' % error, file=sys.stderr)
        return 2

    start = time.time()
    synthetic.write_tree(args.out_dir, args.classes, args.train, args.val, args.size,
                         seed=args.seed, list_files=args.list_files)
    n = args.classes * (args.train + args.val)
    print('wrote %d JPEG files (%d classes x %d train + %d val, ~%dpx) to %s in %.1f s'
          % (n, args.classes, args.train, args.val, args.size, args.out_dir, time.time() - start))
    print('train on it with: data.root=%s%s' % (
        args.out_dir, ' (or data.train_list=train.txt data.val_list=val.txt)'
        if args.list_files else ''))
    return 0


SYNTH_OUTPUTS = ('train', 'val', 'train.txt', 'val.txt')


def _prepare(out_dir, overwrite):
    """Make `out_dir` ready for a fresh tree; an error line, or None."""
    try:
        present = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    except OSError as e:
        return 'cannot list %s: %s' % (out_dir, e.strerror or e)
    if present and not overwrite:
        # A smaller tree written over a larger one would leave the old classes
        # and images in place, partly overwritten: refused, not merged.
        return ('%s is not empty (%d entries: %s%s); choose an empty or new folder, or pass '
                '--overwrite to delete its %s first'
                % (out_dir, len(present), ', '.join(present[:3]),
                   ', ...' if len(present) > 3 else '', ', '.join(SYNTH_OUTPUTS)))
    removed = []
    for name in SYNTH_OUTPUTS if present else ():
        path = os.path.join(out_dir, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
            else:
                continue
        except OSError as e:
            return 'cannot delete %s: %s' % (path, e.strerror or e)
        removed.append(name)
    if removed:
        print('deleted %s in %s (--overwrite)' % (', '.join(removed), out_dir))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        return 'cannot create %s: %s' % (out_dir, e.strerror or e)
    return None


if __name__ == '__main__':
    sys.exit(main())
