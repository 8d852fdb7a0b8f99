"""Rank script: pfn15.env.check_cudnn for a GPU config on a real communicator (argv[1]: require).

Run as an entry point runs it: a stop it raises ends with its one line and status."""
import sys

import pfn15  # noqa: F401
import chainermn

from pfn15 import cli, config
from pfn15.env import check_cudnn


def main(argv):
    cfg = config.load('configs/demo.yaml', ['train.device=gpu',
                                            'train.require_cudnn=%s' % argv[0]],
                      check_paths=False)
    comm = chainermn.create_communicator('naive')
    check_cudnn(cfg, comm)
    print('rank %d continued' % comm.rank, flush=True)
    return 0


sys.exit(cli.run(main, 'pfn15', sys.argv[1:]))
