"""Refusing to mix runs: every trajectory-changing difference between a
checkpoint and the config resuming it stops with exit 2 and one line naming the
key and both values; an explicit resume.allow_changed continues; keys that do
not change the trajectory never block; a finished run is left alone; resume=none
never touches another run's checkpoints. Real pfn15.train under mpiexec."""
import glob
import os
import shutil

import pytest

from helpers import read_summary, train

from pfn15 import config
from pfn15.training import resume

DEMO = 'configs/demo.yaml'
BASE = ['data.classes=3', 'train.iterations=2', 'train.progress_bar=false']


# ------------------------------------------------------------ the comparison (pure)

def _identity(overrides=(), fingerprint='f' * 64, classes=10):
    cfg = config.load(DEMO, list(overrides))
    return resume.identity(cfg, {'fingerprint': fingerprint, 'train_size': 100,
                                 'val_size': 20, 'classes': classes})


def test_differences_ignore_keys_that_do_not_change_the_trajectory():
    a = _identity()
    b = _identity(['out=elsewhere', 'train.progress_bar=false', 'train.progress_every=1',
                   'data.loader_workers=7', 'checkpoint.every_iterations=3', 'checkpoint.keep=9',
                   'resume=none', 'comm.name=naive', 'train.cpu_threads=2', 'name=x'])
    assert resume.differences(a, b) == []


def test_differences_name_each_key_and_both_values():
    a = _identity()
    b = _identity(['seed=3', 'optimizer.eps=1.0e-6', 'train.epochs=20'], fingerprint='e' * 64)
    got = resume.differences(a, b)
    keys = [k for k, _, _ in got]
    assert keys == ['optimizer.rmsprop_warmup.eps', 'seed', 'train.epochs', 'dataset']
    line = resume.refusal(got, [], 'out D')
    assert 'seed: 0 (checkpoint) -> 3 (now)' in line
    assert 'train.epochs: 18 (checkpoint) -> 20 (now)' in line
    assert 'resume.allow_changed=optimizer.rmsprop_warmup.eps,seed,train.epochs,dataset' in line
    assert '\n' not in line
    assert resume.refusal(got, ['optimizer.rmsprop_warmup.eps', 'seed', 'train.epochs', 'dataset'], 'D') is None
    # Some keys no override accepts.
    got = resume.differences(a, _identity(['batch.global=256']))
    line = resume.refusal(got, ['batch.global'], 'out D')
    assert 'batch.global: 128 (checkpoint) -> 256 (now)' in line and 'cannot change' in line


def test_a_key_missing_from_an_old_checkpoint_counts_as_its_default():
    a = _identity()
    del a['config']['optimizer']['lars']['eps']
    assert resume.differences(a, _identity()) == []
    assert resume.differences(a, _identity(['optimizer.lars.eps=0.5']))[0][0] == \
        'optimizer.lars.eps'


def test_a_checkpoint_of_the_flat_optimizer_keys_resumes():
    """A config saved before the per-optimizer sections (optimizer.eps, lars_trust)
    compares by today's keys: the same values, no difference."""
    a = _identity()
    opt = a['config']['optimizer']
    rms, lars = opt.pop('rmsprop_warmup'), opt.pop('lars')
    opt.pop('momentum_sgd', None)
    opt.update(eps=rms['eps'], lr_rmsprop=rms['lr_rmsprop'], rmsprop_decay=rms['decay'],
               lars_trust=lars['trust'], lars_eps=lars['eps'],
               lars_skip_bn_and_bias=lars['skip_bn_and_bias'])
    assert resume.differences(a, _identity()) == []
    got = resume.differences(a, _identity(['optimizer.rmsprop_warmup.eps=1.0e-6']))
    assert [k for k, _, _ in got] == ['optimizer.rmsprop_warmup.eps']


# ------------------------------------------------------------ end to end

@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('base') / 'run')
    r = train(1, DEMO, 'out=' + out, *BASE, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


def copy_of(run, tmp_path):
    out = str(tmp_path / 'run')
    shutil.copytree(run, out)
    return out


def checkpoint_bytes(out):
    return {p: open(p, 'rb').read()
            for p in sorted(glob.glob(os.path.join(out, 'checkpoints', '*')))}


@pytest.mark.parametrize('ranks,change,needle', [
    (2, 'batch.global=256', 'batch.global: 128 (checkpoint) -> 256 (now)'),
    (1, 'seed=1', 'seed: 0 (checkpoint) -> 1 (now)'),
    (1, 'optimizer.name=lars', 'optimizer.name: rmsprop_warmup (checkpoint) -> lars (now)'),
    (1, 'model.width=8', 'model.width: 16 (checkpoint) -> 8 (now)'),
    (1, 'batch.per_worker=16', 'batch.per_worker: 32 (checkpoint) -> 16 (now)'),
    (1, 'schedule.lr_per_256=0.2', 'schedule.lr_per_256: 0.1 (checkpoint) -> 0.2 (now)'),
    (1, 'data.val_fraction=0.3', 'dataset: '),
    (1, 'train.iterations=4', 'train.iterations: 2 (checkpoint) -> 4 (now)'),
])
def test_trajectory_changes_exit_2_with_one_line(finished_run, tmp_path, ranks, change, needle):
    out = copy_of(finished_run, tmp_path)
    before = checkpoint_bytes(out)
    summary = open(os.path.join(out, 'summary.json')).read()
    r = train(ranks, DEMO, 'out=' + out, *(BASE + [change]), timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.count('pfn15: error:') == 1, r.stderr      # one line, from rank 0
    line = [ln for ln in r.stderr.splitlines() if 'pfn15: error:' in ln][0]
    assert needle in line and 'Traceback' not in r.stderr
    key = change.split('=')[0]
    if key not in resume.CANNOT_CHANGE:
        assert 'resume.allow_changed=' in line
    # Nothing was touched.
    assert checkpoint_bytes(out) == before
    assert open(os.path.join(out, 'summary.json')).read() == summary


def test_longer_run_continues_with_the_override(finished_run, tmp_path):
    out = copy_of(finished_run, tmp_path)
    r = train(2, DEMO, 'out=' + out, *(BASE + ['train.iterations=4',
                                               'resume.allow_changed=train.iterations']))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert 'resumed from the checkpoint at iteration 2' in r.stdout
    s = read_summary(out)
    assert s['iterations'] == 4 and s['resumed_from_iteration'] == 2 and s['workers'] == 2


def test_finished_run_says_so_and_keeps_its_summary(finished_run, tmp_path):
    out = copy_of(finished_run, tmp_path)
    summary = open(os.path.join(out, 'summary.json')).read()
    # Keys that do not change the trajectory never block.
    r = train(2, DEMO, 'out=' + out, *(BASE + ['train.progress_every=1', 'checkpoint.keep=4',
                                               'data.loader_workers=3']))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert 'is finished' in r.stdout and 'summary.json is kept' in r.stdout
    assert open(os.path.join(out, 'summary.json')).read() == summary


def test_resume_none_refuses_an_out_holding_checkpoints(finished_run, tmp_path):
    out = copy_of(finished_run, tmp_path)
    before = checkpoint_bytes(out)
    r = train(1, DEMO, 'out=' + out, 'resume=none', *BASE)
    assert r.returncode == 2 and r.stderr.count('pfn15: error:') == 1, r.stderr
    assert 'already holds checkpoints' in r.stderr and 'resume=none never' in r.stderr
    assert checkpoint_bytes(out) == before


def test_renamed_class_folder_refuses(tmp_path):
    from pfn15.data import synthetic
    root = str(tmp_path / 'synth')
    synthetic.write_tree(root, classes=3, train=4, val=2, size=24, seed=0)
    common = ['data.dataset=imagenet', 'data.root=' + root, 'data.crop_size=16',
              'data.val_resize=18', 'data.loader_workers=0', 'batch.global=8',
              'batch.per_worker=8', 'model.width=4', 'train.iterations=1',
              'train.progress_bar=false']
    out = str(tmp_path / 'out')
    r = train(1, DEMO, 'out=' + out, *common)
    assert r.returncode == 0, r.stderr[-2000:]
    first = sorted(os.listdir(os.path.join(root, 'train')))[0]
    for split in ('train', 'val'):      # the first class becomes the last: labels shift
        os.rename(os.path.join(root, split, first), os.path.join(root, split, 'zz-renamed'))
    r = train(1, DEMO, 'out=' + out, *common)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.count('pfn15: error:') == 1
    assert 'dataset: 12 train / 6 val images, 3 classes, sha256 ' in r.stderr
    assert 'resume.allow_changed=dataset' in r.stderr


# ------------------------------------------------------------ the resume section

def test_resume_section_shorthand_overrides_and_round_trip(tmp_path):
    import yaml
    assert config.load(DEMO).resume.mode == 'auto'
    c = config.load(DEMO, ['resume=none'])
    assert (c.resume.mode, c.resume.allow_changed) == ('none', [])
    c = config.load(DEMO, ['resume.allow_changed=train.epochs,seed', 'resume=auto'])
    assert (c.resume.mode, c.resume.allow_changed) == ('auto', ['train.epochs', 'seed'])
    path = tmp_path / 'c.yaml'
    path.write_text('resume: none\ndata: {dataset: digits}\n')   # a plain string in YAML too
    assert config.load(str(path), ['resume.allow_changed=[dataset]']).resume.allow_changed == \
        ['dataset']
    path.write_text(yaml.safe_dump(c.to_dict()))            # to_dict round-trips
    assert config.load(str(path)).to_dict() == c.to_dict()
    with pytest.raises(config.ConfigError, match='resume.allow_changed.*train.epoch'):
        config.load(DEMO, ['resume.allow_changed=train.epoch'])
    with pytest.raises(config.ConfigError, match='resume.mode'):
        config.load(DEMO, ['resume=sometimes'])


def test_every_config_key_has_a_resume_rule():
    """The rule is in each field's metadata (config.py), so a new key cannot be
    forgotten: this fails until it says whether it changes the trajectory."""
    rules = config.resume_rules()
    assert set(rules) == set(config.dotted_keys(config.Config()))
    missing = sorted(k for k, r in rules.items() if r not in config.RESUME_RULES)
    assert not missing, 'config keys without a resume rule: %s' % ', '.join(missing)
    assert 'train.epochs' not in resume.NOT_TRAJECTORY and 'out' in resume.NOT_TRAJECTORY
    assert 'batch.global' in resume.CANNOT_CHANGE and 'dataset.train_size' in resume.CANNOT_CHANGE
    assert rules['optimizer.lars.trust'] == 'same'   # the optimizers' sections too


def test_resume_rules_are_read_from_the_metadata():
    import dataclasses

    @dataclasses.dataclass
    class Section:
        a: int = dataclasses.field(default=0, metadata={'resume': 'free'})
        b: int = 0

    assert config.resume_rules(Section, 'x.') == {'x.a': 'free', 'x.b': None}
