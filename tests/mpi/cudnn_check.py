"""Rank script: pfn15.env.check_cudnn for a GPU config on a real communicator (argv[1]: require)."""
import sys

import pfn15  # noqa: F401
import chainermn

from pfn15 import config
from pfn15.env import check_cudnn

cfg = config.load('configs/demo.yaml', ['train.device=gpu',
                                        'train.require_cudnn=%s' % sys.argv[1]],
                  check_paths=False)
comm = chainermn.create_communicator('naive')
check_cudnn(cfg, comm)
print('rank %d continued' % comm.rank, flush=True)
