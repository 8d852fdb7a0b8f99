"""Training on the packed format (pfn15.data.packed) under mpiexec: a packed run
equals the folder run, and a truncated shard is one line, exit 2. Packing and
reading the format: tests/unit/test_packed.py."""
import os

from data_trees import copy, pack, src  # noqa: F401  (fixtures)
from helpers import read_summary, train


def _train_args(root, out):
    return ('configs/demo.yaml', 'out=' + out, 'data.dataset=imagenet', 'data.root=' + root,
            'data.crop_size=24', 'data.val_resize=28', 'data.loader_workers=1',
            'batch.global=16', 'batch.per_worker=8', 'model.width=4', 'train.epochs=1',
            'schedule.boundaries=[2,3,4]', 'train.progress_bar=false')


TIMINGS = ('train_images_per_sec', 'iteration_seconds_median', 'wall_seconds', 'config')


def test_a_packed_run_equals_the_folder_run(src, pack, tmp_path):
    runs = {}
    for name, root in (('folders', src), ('packed', pack)):
        out = str(tmp_path / name)
        r = train(2, *_train_args(root, out), timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        runs[name] = {k: v for k, v in read_summary(out).items() if k not in TIMINGS}
    assert runs['packed'] == runs['folders']
    assert runs['folders']['iterations'] == 2 and runs['folders']['val_top1'] is not None


def test_training_on_a_truncated_pack_is_one_line_exit_2(copy, tmp_path):
    shard = os.path.join(copy, 'val-00000.bin')
    with open(shard, 'r+b') as f:
        f.truncate(10)
    r = train(1, *_train_args(copy, str(tmp_path / 'out')), timeout=300)
    errors = [ln for ln in r.stderr.splitlines() if 'error' in ln]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-2000:]
    assert shard in errors[0] and 'sample 0' in errors[0] and 'Traceback' not in r.stderr
