"""The optimizer registry: an optimizer is one class and one entry. The registry's
own entries are checked here; a new one added and trained with, in a fresh process:
tests/mpi/test_optimizer_registry_run.py.
"""
import os

import pytest

from pfn15 import config, optimizers

from helpers import ROOT


def test_config_sections_are_the_registry():
    names = optimizers.names()
    assert set(names) == {'rmsprop_warmup', 'momentum_sgd', 'lars'}
    cfg = config.OptimizerConfig()
    for e in optimizers.REGISTRY:
        assert isinstance(getattr(cfg, e.name), e.section)
    field = {f.name: f for f in config.dataclasses.fields(config.OptimizerConfig)}['name']
    assert field.metadata['choices'] == names


def test_old_flat_keys_still_load():
    cfg = config.load(None, ['data.dataset=digits', 'optimizer.eps=1.0e-6',
                             'optimizer.lars_skip_bn_and_bias=false'])
    assert cfg.optimizer.rmsprop_warmup.eps == 1e-6
    assert cfg.optimizer.lars.skip_bn_and_bias is False
    with pytest.raises(config.ConfigError) as e:
        config.load(None, ['data.dataset=digits', 'optimizer.rmsprop_decay=2'])
    assert e.value.key == 'optimizer.rmsprop_decay'
    assert 'optimizer.rmsprop_decay is now optimizer.rmsprop_warmup.decay' in str(e.value)


def test_every_config_still_loads_into_its_section():
    os.environ.setdefault('IMAGENET_ROOT', '/nonexistent')
    lars = config.load(os.path.join(ROOT, 'configs', 'lars-32k.yaml'), check_paths=False)
    assert (lars.optimizer.lars.trust, lars.optimizer.lars.eps) == (0.001, 1e-9)
    pfn = config.load(os.path.join(ROOT, 'configs', '32k.yaml'), check_paths=False)
    assert (pfn.optimizer.rmsprop_warmup.decay, pfn.optimizer.rmsprop_warmup.lr_rmsprop) == \
        (0.99, 3e-4)


def test_registering_late_is_refused():
    with pytest.raises(RuntimeError, match='before importing pfn15.config'):
        optimizers.register(optimizers.Entry('late', __name__, config.BNConfig, 1))
    with pytest.raises(ValueError, match='unknown optimizer'):
        optimizers.entry('adam')
