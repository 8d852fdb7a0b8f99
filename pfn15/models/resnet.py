"""ResNet-50 (He et al. 2016) and small ResNets for 32x32 inputs, from the same blocks.

As in Goyal et al. / Akiba et al.: bottleneck blocks with the stride on the
3x3 convolution ("ResNet-50 v1.5"-style placement, as in Chainer's and
torchvision's references), He initialization of the convolutions, the fully
connected layer from N(0, 0.01), and optionally the last BN gamma of each
residual block at 0 so every block starts as the identity.

Every link is created with its input size, so the model has all its
parameters at construction: ChainerMN can broadcast them before the first
update and checkpoints never meet uninitialized parameters.

On CPU with cpu_functions='onednn' (the config's default) the forward pass
runs on oneDNN (pfn15/functions/onednn, docs/onednn.md), in bfloat16 with
cpu_bf16; with 'pfn15' (and for float64 arrays) it runs pfn15's CPU
functions (pfn15/functions: channels-last convolution as matrix products,
BN fused with the ReLU that follows it, the residual add fused with its ReLU)
through the same links and parameters; `cpu_functions='chainer'` keeps
Chainer's own, and on GPU (or float16) Chainer's (cuDNN) always run. The BN
links' avg_mean/avg_var are updated exactly as L.BatchNormalization does.
"""
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import initializers

from pfn15 import functions as P
from pfn15.functions import onednn as O

CPU_FUNCTIONS = ('onednn', 'pfn15', 'chainer')


def _bn(bn, h, relu, P=P):
    """pfn15's (or, P=O, oneDNN's) BN(+ReLU) with exactly what
    L.BatchNormalization.forward passes."""
    if chainer.config.train:
        avg_mean, avg_var = bn.avg_mean, bn.avg_var
        if chainer.config.in_recomputing:   # as the link: no statistics update
            avg_mean = avg_var = None
        return P.batch_normalization(h, bn.gamma, bn.beta, bn.eps, avg_mean, avg_var,
                                     bn.decay, relu=relu)
    return P.fixed_batch_normalization(h, bn.gamma, bn.beta, bn.avg_mean, bn.avg_var,
                                       bn.eps, relu=relu)


class ConvBN(chainer.Chain):
    """Convolution (no bias) followed by BatchNormalization."""

    def __init__(self, in_ch, out_ch, ksize, stride=1, pad=0, gamma=1.0, bn_decay=0.9):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(in_ch, out_ch, ksize, stride, pad, nobias=True,
                                        initialW=initializers.HeNormal())
            self.bn = L.BatchNormalization(out_ch, decay=bn_decay,
                                           initial_gamma=initializers.Constant(gamma))

    def forward(self, x, relu=False, cpu_functions='pfn15'):
        """bn(conv(x)), then ReLU when relu=True."""
        conv = self.conv
        if cpu_functions == 'onednn' and O.usable(x, conv.W, self.bn.gamma):
            h = O.convolution_2d(x, conv.W, conv.stride, conv.pad)
            return _bn(self.bn, h, relu, O)
        if cpu_functions in ('pfn15', 'onednn') and P.usable(x, conv.W, self.bn.gamma):
            h = P.convolution_2d(x, conv.W, conv.stride, conv.pad)
            return _bn(self.bn, h, relu)
        h = self.bn(conv(x))
        return F.relu(h) if relu else h


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

    def forward(self, x, cpu_functions='pfn15'):
        if cpu_functions == 'onednn' and O.usable(x):
            x, x_shortcut = O.fork(x)   # bf16 gradients must be added by oneDNN
            h = self.a(x, True, cpu_functions)
            h = self.b(h, True, cpu_functions)
            h = self.c(h, False, cpu_functions)
            s = x_shortcut if self.shortcut is None else \
                self.shortcut(x_shortcut, False, cpu_functions)
            return O.add_relu(h, s, overwrite_a=True)   # h: BN's output, read here only
        h = self.a(x, True, cpu_functions)
        h = self.b(h, True, cpu_functions)
        h = self.c(h, False, cpu_functions)
        s = x if self.shortcut is None else self.shortcut(x, False, cpu_functions)
        if cpu_functions in ('pfn15', 'onednn') and P.usable(h, s):
            return P.add_relu(h, s)
        return F.relu(h + s)


class ResNet(chainer.Chain):
    """Stem, stages of bottleneck blocks, global average pooling, fully connected.

    stem='imagenet': 7x7/2 convolution and 3x3/2 max pooling (224x224 inputs).
    stem='small': one 3x3 convolution (32x32 and smaller inputs).
    cpu_functions: 'onednn' (pfn15/functions/onednn on CPU; pfn15's own where
    oneDNN does not load or for float64), 'pfn15' (pfn15/functions) or 'chainer'.
    cpu_bf16: with 'onednn', compute the convolutions, BN, pooling and ReLUs in
    bfloat16 (the input converted after the data, the features before the fully
    connected layer; parameters, their gradients and the loss stay float32).
    """

    def __init__(self, classes, blocks, widths, stem='imagenet', in_channels=3,
                 zero_init_last_gamma=True, bn_decay=0.9, cpu_functions='pfn15',
                 cpu_bf16=False):
        super().__init__()
        if cpu_functions not in CPU_FUNCTIONS:
            raise ValueError('cpu_functions must be one of %s, not %r'
                             % (CPU_FUNCTIONS, cpu_functions))
        self.stem_kind = stem
        self.cpu_functions = cpu_functions
        self.cpu_bf16 = bool(cpu_bf16)
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
        f = self.cpu_functions
        if f == 'onednn' and O.usable(x) and getattr(x, 'dtype', None) == 'float32':
            return self._forward_onednn(x)
        h = self.stem(x, True, f)
        if self.stem_kind == 'imagenet':
            if f == 'pfn15' and P.usable(h):
                h = P.max_pooling_2d(h, 3, 2, 1)
            else:
                h = F.max_pooling_2d(h, 3, stride=2, pad=1, cover_all=False)
        for stage in self.stages:
            for block in stage:
                h = block(h, f)
        h = F.average(h, axis=(2, 3))
        return self.fc(h)

    def _forward_onednn(self, x):
        """The forward pass on oneDNN: activations stay NHWC (float32 or bf16) from the
        stem to the global average pooling."""
        h = O.to_bf16(x) if self.cpu_bf16 else x
        h = self.stem(h, True, 'onednn')
        if self.stem_kind == 'imagenet':
            h = O.max_pooling_2d(h, 3, 2, 1)
        for stage in self.stages:
            for block in stage:
                h = block(h, 'onednn')
        return self.fc(O.global_average_pooling(h))


def resnet50(classes=1000, in_channels=3, zero_init_last_gamma=True, bn_decay=0.9,
             cpu_functions='pfn15', cpu_bf16=False):
    """ResNet-50: 3, 4, 6, 3 bottleneck blocks; 25.6 M parameters at 1,000 classes."""
    return ResNet(classes, (3, 4, 6, 3), (64, 128, 256, 512), 'imagenet', in_channels,
                  zero_init_last_gamma, bn_decay, cpu_functions, cpu_bf16)


def resnet_small(classes=10, in_channels=3, blocks_per_stage=2, width=16,
                 zero_init_last_gamma=True, bn_decay=0.9, cpu_functions='pfn15',
                 cpu_bf16=False):
    """A ResNet for 32x32 (or smaller) inputs: 3x3 stem, three stages of bottlenecks."""
    return ResNet(classes, (blocks_per_stage,) * 3, (width, 2 * width, 4 * width), 'small',
                  in_channels, zero_init_last_gamma, bn_decay, cpu_functions, cpu_bf16)
