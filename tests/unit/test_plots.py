"""What a reader sees: the run's loss/accuracy plots and its log lines (no cursor
codes in a job log), from a real one-epoch demo run under mpiexec."""
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, train

from pfn15.data.order import BatchPlan
from pfn15.training import console, plot


DEMO = 'configs/demo.yaml'


PLAN = BatchPlan(128, 1438)


def test_draw_labels_titles_and_whole_epoch_ticks(tmp_path):
    p = plot.TrainingPlot(['main/loss', 'validation/main/loss'], None, PLAN,
                          'loss.png', 'loss', 'loss -- demo')
    p._data['main/loss'] = [(PLAN.epochs_at(i), 2.0 / i) for i in range(1, 13)]
    p._data['validation/main/loss'] = [(PLAN.epochs_at(12), 0.15)]   # one point: still drawn
    drawn = p.draw(str(tmp_path / 'loss.png'))
    assert drawn['ylabel'] == 'loss' and drawn['title'] == 'loss -- demo'
    assert drawn['xlabel'].startswith('epoch')
    assert drawn['x_ticks'] and all(t.lstrip('\u2212-').isdigit() for t in drawn['x_ticks'])
    assert drawn['lines'] == {'main/loss': 12, 'validation/main/loss': 1}
    assert (tmp_path / 'loss.png').read_bytes()[:4] == b'\x89PNG'


def test_short_runs_get_several_points():
    assert plot.point_period(18) == 1.0
    assert plot.point_period(1) == pytest.approx(1 / 8.0)


def test_plain_lines_drop_cursor_codes():
    class Out(list):
        def write(self, s):
            self.append(s)

        def flush(self):
            pass
    out = Out()
    w = console.PlainLines(out)
    w.write('\x1b[J1   12   1.11\n')
    w.write('\x1b[4A\x1b[J')
    assert ''.join(out) == '1   12   1.11\n'


def test_a_pipe_is_not_a_terminal_and_a_pty_is():
    code = 'from pfn15.training import console; print(console.on_terminal())'
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    piped = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                           env=env, timeout=60)
    assert piped.stdout.strip() == 'False'
    import pty
    pid, fd = pty.fork()
    if pid == 0:   # the child: stdout is the pty
        os.execve(sys.executable, [sys.executable, '-c', code], env)
    text = b''
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        text += chunk
    os.waitpid(pid, 0)
    assert text.strip() == b'True'


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
