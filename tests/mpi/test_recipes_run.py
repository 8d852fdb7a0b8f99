"""The record recipes in a real run: configs/small/sony.yaml on 2 ranks, the batch
doubling at epoch 1 (batch-size control, as Sony's recipe). The recipes against
hand-computed values and docs/recipe.md: tests/unit/test_recipes.py."""
import json
import os

import pytest

from helpers import read_summary, train

from pfn15 import schedules


@pytest.mark.slow
def test_small_sony_grows_the_batch_end_to_end(tmp_path):
    """2 ranks, 2 epochs of configs/small/sony.yaml, the batch doubling at epoch 1: the log
    shows the batch growing and epochs count the samples seen."""
    out = str(tmp_path / 'sony')
    p = train(2, 'configs/small/sony.yaml', 'out=' + out, 'train.epochs=2',
              'batch.schedule=[[0,64],[1,128]]', 'batch.global=64',
              'train.progress_bar=false', 'checkpoint.every_iterations=0', 'resume=none',
              'schedule.warmup_epochs=0', timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    s = read_summary(out)
    size = 1438   # digits training images (val_fraction 0.2)
    sched = [[0, 64], [1, 128]]
    expect = schedules.batch_iterations_for(2, size, sched)
    assert expect == 23 + 11      # ceil(1438 / 64) = 23 updates, then ceil((2876 - 1472) / 128)
    assert s['iterations'] == expect
    assert s['epochs'] == pytest.approx(schedules.batch_epoch_at(expect, size, sched))
    assert s['epochs'] == pytest.approx((23 * 64 + 11 * 128) / size)
    with open(os.path.join(out, 'log')) as f:
        log = json.load(f)
    # epoch 1's updates all used 64, epoch 2's all 128 (k = 1, then 2 per worker)
    assert [e['global_batch'] for e in log] == [64, 128]
