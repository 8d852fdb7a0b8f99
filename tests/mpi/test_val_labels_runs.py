"""Training on ILSVRC2012 as downloaded (a flat val/ and a label file,
data.val_labels) under mpiexec: a right label file trains, a wrong one is one
line, exit 2. The layout and the label files: tests/unit/test_val_labels.py."""
import os

from data_trees import clean, tree  # noqa: F401  (fixtures)
from helpers import read_summary, train


def _train_args(root, out, *extra):
    return ('configs/demo.yaml', 'out=' + out, 'data.dataset=imagenet', 'data.root=' + root,
            'data.crop_size=24', 'data.val_resize=28', 'data.loader_workers=0',
            'batch.global=8', 'batch.per_worker=8', 'model.width=4', 'train.epochs=1',
            'schedule.boundaries=[2,3,4]', 'train.progress_bar=false') + extra


def test_trains_with_val_labels_and_a_wrong_file_is_one_line_exit_2(tree, tmp_path):
    root, _ = tree
    out = str(tmp_path / 'out')
    r = train(1, *_train_args(root, out, 'data.val_labels=LOC_val_solution.csv'), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = read_summary(out)
    assert s['iterations'] == 2 and 0.0 <= s['val_top1'] <= 1.0 and s['bad_images'] == 0

    wrong = os.path.join(root, 'wrong.txt')
    with open(wrong, 'w') as f:
        f.write('ILSVRC2012_val_00000001.JPEG n01440764\n')
    r = train(1, *_train_args(root, str(tmp_path / 'out2'), 'data.val_labels=' + wrong),
              timeout=300)
    errors = [ln for ln in r.stderr.splitlines() if 'error' in ln]
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(errors) == 1 and wrong in errors[0], r.stderr[-3000:]
    assert 'Traceback' not in r.stderr
