"""What a reader sees: the run's loss/accuracy plots and its log lines (no cursor
codes in a job log), drawn and written here. From a real one-epoch demo run
under mpiexec: tests/mpi/test_plots_run.py."""
import os
import subprocess
import sys

import pytest

from helpers import ROOT

from pfn15.data.order import BatchPlan
from pfn15.training import console, plot


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
