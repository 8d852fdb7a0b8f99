"""Keys renamed to say what they count (train.progress_every, train.eval_every_epochs,
checkpoint.every_iterations): an old name in a YAML file or an override is one line
naming the new one; a checkpoint whose stored config uses the old names still resumes."""
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT, child_env

from pfn15 import config
from pfn15 import errors
from pfn15.training import resume

DEMO = 'configs/demo.yaml'
OLD = [('train.log_every', 'train.progress_every', 7),
       ('train.eval_every', 'train.eval_every_epochs', 2.0),
       ('checkpoint.every', 'checkpoint.every_iterations', 30)]


@pytest.mark.parametrize('old, new, value', OLD)
def test_an_old_name_in_an_override_names_the_new_one(old, new, value):
    with pytest.raises(config.ConfigError) as e:
        config.load(DEMO, ['%s=%s' % (old, value)])
    assert e.value.key == old and 'renamed ' + new in str(e.value)
    assert '\n' not in str(e.value)
    assert config.dotted_keys(config.load(DEMO, ['%s=%s' % (new, value)]))[new] == value


@pytest.mark.parametrize('old, new, value', OLD)
def test_an_old_name_in_a_yaml_file_names_the_new_one(tmp_path, old, new, value):
    section, leaf = old.split('.')
    path = tmp_path / 'old.yaml'
    path.write_text(yaml.safe_dump({'data': {'dataset': 'digits'}, section: {leaf: value}}))
    with pytest.raises(config.ConfigError) as e:
        config.load(str(path))
    assert e.value.key == old and new in str(e.value)


def test_the_command_line_says_it_in_one_line():
    r = subprocess.run([sys.executable, '-m', 'pfn15.train', '--show-config', DEMO,
                        'train.log_every=3'], cwd=ROOT, env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == errors.USER_ERROR, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith('pfn15: error:')]
    assert len(lines) == 1 and 'train.progress_every' in lines[0], r.stderr
    assert 'Traceback' not in r.stderr


def test_a_checkpoint_written_under_the_old_names_still_resumes():
    meta = {'fingerprint': 'f' * 64, 'train_size': 100, 'val_size': 20, 'classes': 10}
    current = resume.identity(config.load(DEMO), meta)
    saved = resume.identity(config.load(DEMO), meta)
    for old, new, value in OLD:          # as an older pfn15 stored them
        section, leaf = old.split('.')
        saved['config'][section].pop(new.split('.')[1])
        saved['config'][section][leaf] = value
    assert resume.differences(saved, current) == []
    assert config.stored_key('train.eval_every') == 'train.eval_every_epochs'
