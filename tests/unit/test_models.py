"""ResNet-50 as in the paper, and the small ResNets from the same blocks."""
import numpy

import chainer

from pfn15 import bn
from pfn15.models import Classifier, resnet50, resnet_small, top_k_accuracy
from pfn15.models.resnet import Bottleneck


def test_resnet50_has_the_published_size_and_shape():
    model = resnet50(classes=1000)
    n = sum(p.size for p in model.params())
    assert n == 25557032                        # 25.6 M parameters
    assert len(list(model.params())) == 161      # ~160 parameter arrays
    assert len(bn.batch_norms(model)) == 53
    blocks = [len(stage) for stage in model.stages]
    assert blocks == [3, 4, 6, 3]
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        y = model(numpy.zeros((1, 3, 64, 64), numpy.float32))
    assert y.shape == (1, 1000)


def test_last_bn_gamma_of_each_block_starts_at_zero_when_asked():
    for zero in (True, False):
        model = resnet_small(classes=10, in_channels=1, blocks_per_stage=2, width=4,
                             zero_init_last_gamma=zero)
        blocks = [b for stage in model.stages for b in stage]
        assert all(isinstance(b, Bottleneck) for b in blocks) and len(blocks) == 6
        for b in blocks:
            assert numpy.all(b.c.bn.gamma.array == (0.0 if zero else 1.0))
            assert numpy.all(b.a.bn.gamma.array == 1.0)


def test_he_initialization_scale():
    numpy.random.seed(0)
    model = resnet50(classes=10)
    w = model.stages[2][0].b.conv.W.array         # 256 x 256 x 3 x 3
    fan_in = w.shape[1] * w.shape[2] * w.shape[3]
    assert abs(w.std() - numpy.sqrt(2.0 / fan_in)) / numpy.sqrt(2.0 / fan_in) < 0.05
    assert abs(model.fc.W.array.std() - 0.01) < 0.002


def test_classifier_reports_loss_top1_and_top5():
    y = numpy.array([[5, 4, 3, 2, 1, 0, -1], [0, 1, 2, 3, 4, 5, 6]], numpy.float32)
    t = numpy.array([4, 1], numpy.int32)
    # row 0: label 4 is 5th best -> in top 5; row 1: label 1 is 6th best -> not
    assert float(top_k_accuracy(y, t, 5)) == 0.5
    assert float(top_k_accuracy(y, t, 1)) == 0.0

    class Fixed(chainer.Link):
        def forward(self, x):
            return chainer.Variable(x)

    obs = {}
    model = Classifier(Fixed())
    reporter = chainer.Reporter()
    reporter.add_observer('main', model)
    with reporter.scope(obs):
        loss = model(y, t)
    logp = y - numpy.log(numpy.exp(y).sum(axis=1, keepdims=True))
    assert abs(float(loss.array) + (logp[0, 4] + logp[1, 1]) / 2) < 1e-5
    assert float(obs['main/top5']) == 0.5 and float(obs['main/accuracy'].array) == 0.0
