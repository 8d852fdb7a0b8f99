"""What a reader sees after a real one-epoch demo run under mpiexec: the
loss/accuracy plots, and log lines without cursor codes (a pipe is not a
terminal). Drawing and the lines alone: tests/unit/test_plots.py."""
import json
import os

from helpers import train


DEMO = 'configs/demo.yaml'


def test_one_epoch_run_plots_lines_and_logs_plain_lines(tmp_path):
    out = str(tmp_path / 'one')
    r = train(2, DEMO, 'out=' + out, 'train.epochs=1', timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert '\x1b' not in r.stdout + r.stderr           # a pipe: no cursor codes
    assert 'pfn15: iteration 12/12 (100%)' in r.stdout  # the progress bar, as a plain line
    for name in ('loss.png', 'accuracy.png'):
        assert os.path.getsize(os.path.join(out, name)) > 1000
    log = json.load(open(os.path.join(out, 'log')))
    assert len(log) == 1 and log[0]['epoch'] == 1
