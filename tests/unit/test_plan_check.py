"""tools/plan_check.py's load measurement: it sees a busy machine (a CPU-burning
process that is not one of the check's own) and judges its verdict by it."""
import subprocess
import sys
import time

import plan_check  # tools/plan_check.py

BURN = 'import time\nend = time.time() + 30\nwhile time.time() < end: pass\n'


def test_a_process_burning_a_core_is_seen_as_other_load():
    burner = subprocess.Popen([sys.executable, '-c', BURN])
    try:
        time.sleep(0.3)
        meter = plan_check.LoadMeter().start()
        time.sleep(1.5)
        meter.stop()
    finally:
        burner.kill()
        burner.wait()   # only now its CPU time becomes ours: during the meter it was not
    # One busy loop is one core (the machine may hold more load besides).
    assert meter.other_cores >= 0.6, meter.describe()
    assert plan_check.loaded(meter.other_cores, 2, 0.15)
    text = meter.describe()
    assert 'cores during the check' in text and 'load average' in text and 'probe' in text


def test_the_checks_own_work_is_not_other_load():
    before = plan_check.LoadMeter().start()
    subprocess.run([sys.executable, '-c', BURN.replace('30', '1.5')], check=True)
    before.stop()
    quiet = plan_check.LoadMeter().start()
    time.sleep(1.5)
    quiet.stop()
    # Our own waited-for child's 1.5 CPU-seconds are subtracted: what remains is
    # the machine's other load, about what a quiet interval measures.
    assert before.other_cores < quiet.other_cores + 0.5, (before.describe(), quiet.describe())


def test_verdict_threshold():
    assert not plan_check.loaded(0.05, 2, 0.15)
    assert not plan_check.loaded(0.25, 2, 0.15)
    assert plan_check.loaded(0.35, 2, 0.15)
    assert plan_check.loaded(2.0, 16, 0.10) and not plan_check.loaded(1.0, 16, 0.10)
