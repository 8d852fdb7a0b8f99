"""ResNet-50 (He et al. 2016) and small ResNets for 32x32 inputs, from the same blocks.

As in Goyal et al. / Akiba et al.: bottleneck blocks with the stride on the
3x3 convolution ("ResNet-50 v1.5"-style placement, as in Chainer's and
torchvision's references), He initialization of the convolutions, the fully
connected layer from N(0, 0.01), and optionally the last BN gamma of each
residual block at 0 so every block starts as the identity.

Every link is created with its input size, so the model has all its
parameters at construction: ChainerMN can broadcast them before the first
update and checkpoints never meet uninitialized parameters.
"""
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import initializers


class ConvBN(chainer.Chain):
    """Convolution (no bias) followed by BatchNormalization."""

    def __init__(self, in_ch, out_ch, ksize, stride=1, pad=0, gamma=1.0, bn_decay=0.9):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(in_ch, out_ch, ksize, stride, pad, nobias=True,
                                        initialW=initializers.HeNormal())
            self.bn = L.BatchNormalization(out_ch, decay=bn_decay,
                                           initial_gamma=initializers.Constant(gamma))

    def forward(self, x):
        return self.bn(self.conv(x))


class Bottleneck(chainer.Chain):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand; projection shortcut on change."""

    expansion = 4

    def __init__(self, in_ch, mid_ch, stride=1, zero_init_last_gamma=True, bn_decay=0.9):
        super().__init__()
        out_ch = mid_ch * self.expansion
        with self.init_scope():
            self.a = ConvBN(in_ch, mid_ch, 1, bn_decay=bn_decay)
            self.b = ConvBN(mid_ch, mid_ch, 3, stride, 1, bn_decay=bn_decay)
            self.c = ConvBN(mid_ch, out_ch, 1, gamma=0.0 if zero_init_last_gamma else 1.0,
                            bn_decay=bn_decay)
            if stride != 1 or in_ch != out_ch:
                self.shortcut = ConvBN(in_ch, out_ch, 1, stride, bn_decay=bn_decay)
            else:
                self.shortcut = None

    def forward(self, x):
        h = F.relu(self.a(x))
        h = F.relu(self.b(h))
        h = self.c(h)
        s = x if self.shortcut is None else self.shortcut(x)
        return F.relu(h + s)


class ResNet(chainer.Chain):
    """Stem, stages of bottleneck blocks, global average pooling, fully connected.

    stem='imagenet': 7x7/2 convolution and 3x3/2 max pooling (224x224 inputs).
    stem='small': one 3x3 convolution (32x32 and smaller inputs).
    """

    def __init__(self, classes, blocks, widths, stem='imagenet', in_channels=3,
                 zero_init_last_gamma=True, bn_decay=0.9):
        super().__init__()
        self.stem_kind = stem
        stem_out = widths[0]
        with self.init_scope():
            if stem == 'imagenet':
                self.stem = ConvBN(in_channels, stem_out, 7, 2, 3, bn_decay=bn_decay)
            else:
                self.stem = ConvBN(in_channels, stem_out, 3, 1, 1, bn_decay=bn_decay)
            self.stages = chainer.ChainList()
            ch = stem_out
            for i, (n, width) in enumerate(zip(blocks, widths)):
                stage = chainer.ChainList()
                for j in range(n):
                    stride = 2 if (j == 0 and i > 0) else 1
                    stage.add_link(Bottleneck(ch, width, stride, zero_init_last_gamma, bn_decay))
                    ch = width * Bottleneck.expansion
                self.stages.add_link(stage)
            self.fc = L.Linear(ch, classes, initialW=initializers.Normal(0.01))

    def forward(self, x):
        h = F.relu(self.stem(x))
        if self.stem_kind == 'imagenet':
            h = F.max_pooling_2d(h, 3, stride=2, pad=1, cover_all=False)
        for stage in self.stages:
            for block in stage:
                h = block(h)
        h = F.average(h, axis=(2, 3))
        return self.fc(h)


def resnet50(classes=1000, in_channels=3, zero_init_last_gamma=True, bn_decay=0.9):
    """ResNet-50: 3, 4, 6, 3 bottleneck blocks; 25.6 M parameters at 1,000 classes."""
    return ResNet(classes, (3, 4, 6, 3), (64, 128, 256, 512), 'imagenet', in_channels,
                  zero_init_last_gamma, bn_decay)


def resnet_small(classes=10, in_channels=3, blocks_per_stage=2, width=16,
                 zero_init_last_gamma=True, bn_decay=0.9):
    """A ResNet for 32x32 (or smaller) inputs: 3x3 stem, three stages of bottlenecks."""
    return ResNet(classes, (blocks_per_stage,) * 3, (width, 2 * width, 4 * width), 'small',
                  in_channels, zero_init_last_gamma, bn_decay)
