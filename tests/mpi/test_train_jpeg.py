"""The real JPEG path end to end: synthetic tree -> ImageNet dataset -> transforms
-> MultiprocessIterator (forkserver) -> 2-rank training, with one corrupt file."""
import json
import os

from helpers import read_summary, train

from pfn15.data import synthetic


def test_two_ranks_train_on_synthetic_jpegs_and_count_a_corrupt_one(tmp_path):
    root = str(tmp_path / 'synth')
    synthetic.write_tree(root, classes=4, train=24, val=8, size=40, seed=0)
    first = sorted(os.listdir(os.path.join(root, 'train')))[0]
    victim = os.path.join(root, 'train', first, sorted(os.listdir(
        os.path.join(root, 'train', first)))[0])
    with open(victim, 'r+b') as f:              # truncate one JPEG mid-stream
        f.truncate(200)
    out = str(tmp_path / 'out')
    r = train(2, 'configs/demo.yaml', 'out=' + out, 'data.dataset=imagenet', 'data.root=' + root,
              'data.crop_size=32', 'data.val_resize=36', 'data.min_area=0.35',
              'data.loader_workers=1', 'batch.global=32', 'batch.per_worker=16',
              'model.width=8', 'train.epochs=3', 'schedule.boundaries=[2,3,4]',
              # 1 corrupt file in 96 is 1%: above the default limit of 0.1%.
              'data.max_bad_fraction=0.02', 'train.progress_bar=false', timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = read_summary(out)
    assert s['workers'] == 2 and s['iterations'] == 9      # ceil(3 x 96 / 32)
    assert 0.0 <= s['val_top1'] <= 1.0
    log = json.load(open(os.path.join(out, 'log')))
    assert log[-1]['bad_images'] >= 1                     # the truncated file, counted
    # In summary.json too, with the file; named once for both ranks and 3 epochs.
    assert s['bad_images'] >= 3 and s['bad_files'] == [victim]
    assert len([ln for ln in r.stderr.splitlines() if victim in ln]) == 1, r.stderr[-3000:]
    assert log[-1]['main/loss'] < log[0]['main/loss'] * 1.5
