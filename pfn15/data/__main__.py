"""Data tools: python -m pfn15.data synth OUT_DIR --classes N --train N --val N --size S
                                          [--seed K] [--list-files]

Writes a synthetic ImageNet-layout tree of real JPEG files (see
pfn15/data/synthetic.py), ready for `data.root=OUT_DIR`.
"""
import os
import sys
import time

from pfn15 import cli
from pfn15.data import synthetic


def main(argv=None):
    parser = cli.ArgumentParser(prog='python -m pfn15.data', description='Data tools of pfn15.',
                                epilog=cli.epilog(tool=True))
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
    try:
        os.makedirs(args.out_dir, exist_ok=True)
    except OSError as e:
        parser.error('cannot create %s: %s' % (args.out_dir, e.strerror or e))

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


if __name__ == '__main__':
    sys.exit(cli.run(main, 'pfn15.data'))
