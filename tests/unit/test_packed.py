"""The packed format (pfn15.data.packed): pack, verify, resume, read by offset. Real
JPEG files, real processes. Training on a pack under mpiexec (a packed run equal to
the folder run): tests/mpi/test_packed_runs.py."""
import json
import os
import zlib

import numpy
import pytest
from PIL import Image

from data_trees import copy, pack, src  # noqa: F401  (fixtures)
from helpers import PACK_SHARD_MB, ROOT, data_cli

from pfn15 import data
from pfn15.config import DataConfig
from pfn15.data import DataError, health, imagenet, packed, transforms


def test_the_pack_holds_the_listing_bytes_labels_and_sizes(src, pack):
    m = json.load(open(os.path.join(pack, packed.MANIFEST)))
    train, val, meta = imagenet.load(DataConfig(root=src))
    assert m['classes'] == meta['class_names'] and m['counts'] == {'train': 24, 'val': 9}
    assert len(m['shards']['train']) > 2                  # a few shards, not one
    # The fingerprint is the folder listing's: checkpoints carry over.
    assert m['fingerprint'] == data.fingerprint(
        {'train_paths': train.paths, 'train_labels': train.labels,
         'val_paths': val.paths, 'val_labels': val.labels}, meta['class_names'])
    for split, ds in (('train', train), ('val', val)):
        index = numpy.load(os.path.join(pack, split + '.index.npy'), allow_pickle=False)
        assert index.dtype == packed.INDEX_DTYPE and len(index) == len(ds)
        for i in range(len(ds)):
            path, label = ds[i]
            raw = open(path, 'rb').read()
            r = index[i]
            with open(os.path.join(pack, m['shards'][split][r['shard']]), 'rb') as f:
                f.seek(int(r['offset']))
                assert f.read(int(r['length'])) == raw      # the same JPEG bytes
            w, h = Image.open(path).size
            assert (r['label'], r['height'], r['width'], r['crc32']) == (
                label, h, w, zlib.crc32(raw))


def test_a_packed_sample_decodes_exactly_as_its_file(src, pack):
    cfg = DataConfig(crop_size=32, val_resize=36)
    arrays, meta = packed.load(DataConfig(root=pack))
    ptrain, pval = packed.datasets(pack, arrays)
    train, val, _ = imagenet.load(DataConfig(root=src))
    t, v = transforms.train_transform(cfg, seed=3), transforms.val_transform(cfg)
    for i in (0, 7, 23):
        a = t(tuple(train[i]) + ((1, i),))
        b = t(tuple(ptrain[i]) + ((1, i),))
        assert numpy.array_equal(a[0], b[0]) and a[1] == b[1]
    assert numpy.array_equal(v(val[4])[0], v(pval[4])[0])
    assert meta['train_size'] == 24 and meta['classes'] == 3


def test_verify_finds_a_flipped_byte_a_truncated_and_a_missing_shard(copy):
    r = data_cli('verify', copy, '--decode')
    assert r.returncode == 0 and 'sound: 24 train + 9 val samples' in r.stdout, r.stderr
    shard = os.path.join(copy, 'train-00001.bin')
    with open(shard, 'r+b') as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    r = data_cli('verify', copy)
    assert r.returncode == 2 and 'checksum' in r.stderr and shard in r.stderr, r.stderr
    with open(shard, 'r+b') as f:
        f.truncate(50)
    r = data_cli('verify', copy)
    assert r.returncode == 2 and 'truncated' in r.stderr and shard in r.stderr
    os.remove(shard)
    r = data_cli('verify', copy)
    assert r.returncode == 2 and 'does not exist' in r.stderr and shard in r.stderr


def test_a_truncated_or_missing_shard_names_the_shard_and_sample(copy):
    index = numpy.load(os.path.join(copy, 'train.index.npy'), allow_pickle=False)
    shard = os.path.join(copy, 'train-00002.bin')
    first = int(numpy.nonzero(index['shard'] == 2)[0][0])
    with open(shard, 'r+b') as f:
        f.truncate(int(index['offset'][first]) + 10)
    with pytest.raises(DataError) as e:
        packed.load(DataConfig(root=copy))
    msg = str(e.value)
    assert shard in msg and 'truncated' in msg and 'sample %d' % first in msg, msg
    assert 'train/' in msg                       # the source file of the sample

    os.remove(shard)
    with pytest.raises(DataError) as e:
        packed.load(DataConfig(root=copy))
    assert shard in str(e.value) and 'does not exist' in str(e.value)


def test_a_shard_cut_while_training_is_missing_data(copy):
    arrays, _ = packed.load(DataConfig(root=copy))
    ptrain, _ = packed.datasets(copy, arrays)
    sample, label = ptrain[len(ptrain) - 1]
    with open(sample.shard_path, 'r+b') as f:
        f.truncate(sample.offset + 5)
    before = health.bad_image_count()
    transforms.train_transform(DataConfig(crop_size=24))((sample, label))
    msg = health.first_data_error()
    assert sample.shard_path in msg and 'truncated' in msg and 'sample %d' % sample.index in msg
    assert health.bad_image_count() == before
    health.clear_error()


def test_pack_resumes_where_it_was_interrupted(src, pack, tmp_path):
    # The state an interruption leaves: the plan, shard 0 whole, shard 1 half
    # written (.partial), no manifest. Made with pack's own steps.
    out = str(tmp_path / 'resumed')
    os.makedirs(out)
    cfg = DataConfig(root=src)
    the_plan, splits, _ = packed.plan(cfg, PACK_SHARD_MB)
    with open(os.path.join(out, packed.PLAN), 'w') as f:
        json.dump(the_plan, f)
    assert packed.pack_shard(packed.shard_job(out, the_plan, splits, 'train', 0)) is None
    with open(os.path.join(out, 'train-00001.bin.partial'), 'wb') as f:
        f.write(b'half a shard')
    kept = os.stat(os.path.join(out, 'train-00000.bin')).st_mtime_ns
    n = sum(len(r) for r in the_plan['ranges'].values())
    r = data_cli('pack', src, out, '--shard-mb', str(PACK_SHARD_MB))
    assert r.returncode == 0, r.stderr
    assert 'resuming %s: 1 of %d shards already written' % (out, n) in r.stdout
    assert os.stat(os.path.join(out, 'train-00000.bin')).st_mtime_ns == kept
    for name in sorted(os.listdir(pack)):                 # the same pack as in one go
        assert open(os.path.join(out, name), 'rb').read() == \
            open(os.path.join(pack, name), 'rb').read() or name == packed.MANIFEST, name
    assert sorted(os.listdir(out)) == sorted(os.listdir(pack))
    r = data_cli('pack', src, out, '--shard-mb', str(PACK_SHARD_MB))
    assert r.returncode == 0 and 'nothing to do' in r.stdout


def test_pack_refuses_a_non_empty_folder_and_a_missing_source(src, tmp_path):
    out = tmp_path / 'busy'
    out.mkdir()
    (out / 'x.txt').write_text('x')
    r = data_cli('pack', src, str(out))
    assert r.returncode == 2 and 'not empty' in r.stderr and len(r.stderr.splitlines()) == 1
    r = data_cli('pack', str(tmp_path / 'nope'), str(tmp_path / 'o'))
    assert r.returncode == 2 and str(tmp_path / 'nope') in r.stderr


def test_max_side_reencodes_large_images(src, tmp_path):
    out = str(tmp_path / 'small')
    r = data_cli('pack', src, out, '--max-side', '40', '--shard-mb', '1')
    assert r.returncode == 0, r.stderr
    index = numpy.load(os.path.join(out, 'train.index.npy'), allow_pickle=False)
    assert max(index['height'].max(), index['width'].max()) <= 40
    assert data_cli('verify', out, '--decode').returncode == 0
    m = json.load(open(os.path.join(out, packed.MANIFEST)))
    assert m['max_side'] == 40


def test_config_checks_format_and_label_file(src, pack):
    from pfn15 import config
    DEMO = os.path.join(ROOT, 'configs', 'demo.yaml')
    base = ['data.dataset=imagenet']
    with pytest.raises(config.ConfigError) as e:
        config.load(DEMO, base + ['data.root=' + src, 'data.format=packed'])
    assert 'manifest.json' in str(e.value) and 'pfn15.data pack' in str(e.value)
    with pytest.raises(config.ConfigError) as e:
        config.load(DEMO, base + ['data.root=' + src, 'data.val_labels=no.csv'])
    assert os.path.join(src, 'no.csv') in str(e.value)
    with pytest.raises(config.ConfigError):
        config.load(DEMO, base + ['data.root=' + src, 'data.format=zip'])
    cfg = config.load(DEMO, base + ['data.root=' + pack])   # auto: a pack
    assert data.packed_format(cfg.data) and not data.packed_format(
        config.load(DEMO, base + ['data.root=' + src]).data)
