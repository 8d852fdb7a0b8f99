"""python -m pfn15.plan: how long will data-parallel training take on my cluster?

A pure model (numpy/matplotlib only, no Chainer) of one synchronous
data-parallel update and of the whole run:

    iteration = compute + exposed all-reduce
    compute   = (global batch / workers) / min(GPU images/s, data-loading images/s)
                x CPU oversubscription (CPU ranks sharing cores: ceil(threads / cores))
    exposed   = all-reduce - min(overlap x all-reduce, backward of the last microbatch)
    epoch     = iterations per epoch x iteration + evaluation (forward only, ~1/3 step)
    total     = ceil(epochs x train images / global batch) x iteration + evaluations

The all-reduce uses the latency-bandwidth (alpha-beta) model: a message of
n bytes over one link costs alpha + n x beta. See `allreduce_time` for the
three algorithms (ring, hierarchical, 2D torus) of ChainerMN's all-reduce
(comm.reduction=fast), `canonical_time` for pfn15's canonical-order one.

    python -m pfn15.plan --preset all                    # the record runs vs published times
    python -m pfn15.plan --preset pfn --workers 8,64,512,1024 --plot pfn.png
    python -m pfn15.plan --calibrate step.json --calibrate allreduce.json --workers 1,2,3

Every preset input below carries its source; none is fitted to the
published times. Where the model and a published time disagree, the ratio
is printed as it comes out.
"""
import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Optional

from pfn15 import cli, errors

# ImageNet-1k (ILSVRC2012) [docs/recipe.md]
IMAGENET_TRAIN = 1281167
IMAGENET_VAL = 50000
# ResNet-50: 25.6 M parameters in about 160 arrays [docs/recipe.md; He et al. 2016].
RESNET50_PARAMS = 25.6e6
RESNET50_ARRAYS = 161
# Forward-only cost of an image relative to a training step (forward + backward):
# backward costs about twice the forward, so forward ~ 1/3 of the step, and the
# backward (which the all-reduce can overlap) ~ 2/3.
EVAL_COST = 1.0 / 3.0
BACKWARD_FRACTION = 2.0 / 3.0

ALGOS = ('ring', 'hierarchical', 'torus2d')
GB = 1e9


# ------------------------------------------------------------------ the model

def allreduce_time(nbytes, workers, alpha, beta, algo='ring', gpus_per_node=1,
                   alpha_intra=None, beta_intra=None, calls=1):
    """Seconds to all-reduce `nbytes` over `workers` ranks (alpha-beta model).

    alpha, beta: latency (s) and per-byte time (s/B) of the inter-node path --
    beta = 1 / (a node's total inter-node bandwidth). alpha_intra, beta_intra:
    the same inside a node (default: the inter-node values). p = workers,
    g = min(gpus_per_node, p) ranks per node, m = ceil(p / g) nodes, n = nbytes.

    ring          2(p-1) alpha + 2(p-1)/p n beta       (one flat ring; inside
                  one node (p <= g) the intra-node alpha/beta apply)
    hierarchical  2[(g-1) alpha_i + n beta_i]           (pipelined reduce to a node
                                                        leader, broadcast back)
                  + 2(m-1) alpha + 2(m-1)/m n beta      (ring among the m leaders)
    torus2d       2[(g-1) alpha_i + (g-1)/g n beta_i]   (reduce-scatter and all-gather
                                                        in the node: Mikami et al.'s
                                                        horizontal rings)
                  + 2(m-1) alpha + 2(m-1)/m n beta      (g vertical rings of n/g bytes
                                                        sharing the node's links)

    calls: how many separate all-reduces carry the n bytes (ChainerMN's
    'naive' communicator makes one per parameter array; the packing
    communicators one in all): every latency term is paid `calls` times, the
    bandwidth terms once.
    """
    p = int(workers)
    if p < 1:
        raise ValueError('workers must be >= 1, got %r' % (workers,))
    if algo not in ALGOS:
        raise ValueError('algo must be one of %s, got %r' % (', '.join(ALGOS), algo))
    if p == 1 or nbytes <= 0:
        return 0.0
    ai = alpha if alpha_intra is None else alpha_intra
    bi = beta if beta_intra is None else beta_intra
    n = float(nbytes)
    g = max(1, min(int(gpus_per_node), p))
    m = int(math.ceil(p / float(g)))
    if algo == 'ring':
        a, b = (ai, bi) if m == 1 else (alpha, beta)
        return calls * 2 * (p - 1) * a + 2.0 * (p - 1) / p * n * b
    inter = calls * 2 * (m - 1) * alpha + 2.0 * (m - 1) / m * n * beta
    if algo == 'hierarchical':
        intra = 2 * (calls * (g - 1) * ai + (n * bi if g > 1 else 0.0))
    else:  # torus2d
        intra = 2 * (calls * (g - 1) * ai + (g - 1.0) / g * n * bi)
    return intra + inter


def canonical_time(nbytes, workers, alpha, beta, gpus_per_node=1, alpha_intra=None,
                   beta_intra=None, covers=1):
    """Seconds of comm.reduction=canonical's all-reduce (pfn15/reduction.py), same model.

    An all-to-all of the ranks' cover-node sums, chunk j to rank j, then an
    all-gather of the finished chunks; `covers`: the most tree nodes one rank
    sends (1 when every rank's groups form a subtree, docs/reduction.md).

    one node      2(p-1) alpha_i + (covers + 1)(p-1)/p n beta_i
                  (with covers = 1 exactly the ring's volume)
    m > 1 nodes   2(p-1) alpha + (covers + 1) g (p-g)/p n beta
                  (the exchange is flat: each of a node's g ranks sends its share
                  off the node, g times a ring's inter-node volume)
    """
    p = int(workers)
    if p <= 1 or nbytes <= 0:
        return 0.0
    ai = alpha if alpha_intra is None else alpha_intra
    bi = beta if beta_intra is None else beta_intra
    n = float(nbytes)
    g = max(1, min(int(gpus_per_node), p))
    if g >= p:
        return 2 * (p - 1) * ai + (covers + 1.0) * (p - 1) / p * n * bi
    return 2 * (p - 1) * alpha + (covers + 1.0) * g * (p - g) / p * n * beta


def max_covers(global_batch, batch_per_worker, workers):
    """The most cover nodes a rank sends in the canonical all-reduce (1 if aligned)."""
    from pfn15 import reduction
    groups = max(1, int(global_batch) // int(batch_per_worker))
    k = groups // int(workers)
    if k < 1 or k * workers != groups:
        return 1
    return max(len(reduction.cover(r * k, (r + 1) * k, groups)) for r in range(int(workers)))


def fit_alpha_beta(sizes, times, workers):
    """Fit measured all-reduce times T(n) = a + b n, then express them in the
    ring model at `workers` ranks (a = 2(p-1) alpha, b = 2(p-1)/p beta).

    Weighted least squares on relative error (weights 1/T), so the small
    messages -- which carry the latency -- count as much as the large ones.
    a and b are kept >= 0 (a negative one is set to 0 and the other refitted).
    Returns dict(a_s, b_s_per_byte, alpha_s, beta_s_per_byte).
    """
    import numpy
    x = numpy.asarray(sizes, dtype=float)
    y = numpy.asarray(times, dtype=float)
    if len(x) < 2 or len(set(x.tolist())) < 2:
        raise ValueError('need at least two different message sizes to fit alpha and beta')
    p = int(workers)
    if p < 2:
        raise ValueError('an all-reduce fit needs at least 2 ranks')
    w = 1.0 / numpy.maximum(y, 1e-12)
    A = numpy.stack([numpy.ones_like(x), x], axis=1) * w[:, None]
    (a, b), *_ = numpy.linalg.lstsq(A, y * w, rcond=None)
    if a < 0:
        a, b = 0.0, float(numpy.sum(w * w * x * y) / numpy.sum(w * w * x * x))
    if b < 0:
        a, b = float(numpy.sum(w * w * y) / numpy.sum(w * w)), 0.0
    return {'a_s': float(a), 'b_s_per_byte': float(b),
            'alpha_s': float(a) / (2 * (p - 1)), 'beta_s_per_byte': float(b) * p / (2 * (p - 1))}


def iteration_time(global_batch, workers, img_per_s, allreduce_s, batch_per_worker=32,
                   overlap=0.0, data_img_per_s=None, oversubscription=1.0,
                   backward_fraction=BACKWARD_FRACTION, update_overhead_s=0.0):
    """One synchronous update. Returns a dict of seconds:

    images per worker = global_batch / workers, in microbatches of at most
    batch_per_worker; compute = images / min(img_per_s, data_img_per_s) x
    oversubscription, plus update_overhead_s (the optimizer's step and the
    iteration's bookkeeping, once per update) x oversubscription; the
    all-reduce starts during the backward of the last microbatch, hiding
    min(overlap x allreduce, backward) of it.
    """
    if not 0.0 <= overlap <= 1.0:
        raise ValueError('overlap must be in [0, 1], got %r' % (overlap,))
    per_worker = float(global_batch) / workers
    rate = img_per_s if data_img_per_s is None else min(img_per_s, data_img_per_s)
    compute = (per_worker / rate + update_overhead_s) * oversubscription
    microbatches = int(math.ceil(per_worker / batch_per_worker - 1e-9))
    last_micro = compute / max(1, microbatches) if microbatches else compute
    hidden = min(overlap * allreduce_s, backward_fraction * last_micro)
    return {'compute_s': compute, 'allreduce_s': allreduce_s,
            'exposed_comm_s': allreduce_s - hidden, 'iteration_s': compute + allreduce_s - hidden,
            'microbatches': max(1, microbatches), 'data_bound': rate < img_per_s}


@dataclass
class Setup:
    """Every input of the model. Bandwidths in GB/s (1e9 B/s), latencies in s."""
    name: str = 'custom'
    # compute: one worker's training-step throughput (forward+backward+update)
    img_per_s: float = 171.0
    batch_per_worker: int = 32
    # once per update whatever the microbatches (optimizer, bookkeeping); measured
    # by bench step on CPU, 0 where img_per_s already includes it
    update_overhead_s: float = 0.0
    global_batch: int = 32768
    epochs: float = 90.0
    train_images: int = IMAGENET_TRAIN
    val_images: int = IMAGENET_VAL
    eval_every: float = 1.0          # epochs; 0 = no evaluation
    # gradients
    params: float = RESNET50_PARAMS
    arrays: int = RESNET50_ARRAYS
    fp16_allreduce: bool = False
    calls_per_array: bool = False    # True: one all-reduce per array ('naive' communicator)
    # network
    algo: str = 'ring'
    # fast: ChainerMN's all-reduce (`algo`); canonical: pfn15's fixed-tree one
    # (comm.reduction, `canonical_time`)
    reduction: str = 'fast'
    gpus_per_node: int = 8
    inter_gbps: float = 13.6         # a node's total inter-node bandwidth, GB/s
    inter_alpha: float = 1e-6
    intra_gbps: float = 15.75        # per-GPU intra-node link, GB/s
    intra_alpha: float = 1e-6
    overlap: float = 0.0
    # data loading ceiling: decode img/s per core x cores per GPU (None = no ceiling)
    decode_per_core: Optional[float] = None
    cores_per_gpu: Optional[float] = None
    # CPU ranks: cores per node and threads per rank (None = GPUs, no sharing)
    cores_per_node: Optional[float] = None
    threads_per_worker: float = 1.0
    notes: str = ''

    def grad_bytes(self):
        return self.params * (2 if self.fp16_allreduce else 4)

    def data_img_per_s(self):
        if self.decode_per_core is None or self.cores_per_gpu is None:
            return None
        return self.decode_per_core * self.cores_per_gpu

    def oversubscription(self, workers):
        """How much slower a CPU rank computes when the node's ranks x threads exceed
        its cores. A synchronous step waits for its slowest rank, and the kernel
        places whole threads: the busiest core runs ceil(threads / cores) of them.
        (Measured on 2 cores, 3 ranks of 1 thread: 2.0x per rank in step, where 3
        independent processes get the fair share, 1.5x.)"""
        if self.cores_per_node is None:
            return 1.0
        threads = min(workers, self.gpus_per_node) * self.threads_per_worker
        return float(max(1, math.ceil(threads / float(self.cores_per_node) - 1e-9)))


def plan_one(s, workers):
    """The model at one worker count: a dict of figures (seconds unless named)."""
    if s.reduction == 'canonical':
        ar = canonical_time(s.grad_bytes(), workers, s.inter_alpha, 1.0 / (s.inter_gbps * GB),
                            s.gpus_per_node, s.intra_alpha, 1.0 / (s.intra_gbps * GB),
                            max_covers(s.global_batch, s.batch_per_worker, workers))
    else:
        ar = allreduce_time(s.grad_bytes(), workers, s.inter_alpha, 1.0 / (s.inter_gbps * GB),
                            s.algo, s.gpus_per_node, s.intra_alpha, 1.0 / (s.intra_gbps * GB),
                            calls=s.arrays if s.calls_per_array else 1)
    it = iteration_time(s.global_batch, workers, s.img_per_s, ar, s.batch_per_worker,
                        s.overlap, s.data_img_per_s(), s.oversubscription(workers),
                        update_overhead_s=s.update_overhead_s)
    iters_per_epoch = s.train_images / float(s.global_batch)
    iterations = int(math.ceil(s.epochs * s.train_images / float(s.global_batch) - 1e-9))
    # Evaluation: each worker forwards val_images / workers images (ChainerMN's
    # multi-node evaluator scatters the validation set), at 1/EVAL_COST the
    # training rate, no faster than the data loader decodes.
    fwd_rate = s.img_per_s / EVAL_COST / s.oversubscription(workers)
    data = s.data_img_per_s()
    if data is not None:
        fwd_rate = min(fwd_rate, data)
    eval_s = (s.val_images / float(workers)) / fwd_rate if s.eval_every > 0 else 0.0
    evaluations = int(math.floor(s.epochs / s.eval_every + 1e-9)) if s.eval_every > 0 else 0
    train_s = iterations * it['iteration_s']
    # Scaling efficiency: throughput against `workers` x one worker alone
    # (no communication, no oversubscription, same data ceiling).
    one = iteration_time(s.global_batch, 1, s.img_per_s, 0.0, s.batch_per_worker,
                         0.0, data, 1.0, update_overhead_s=s.update_overhead_s)['iteration_s']
    out = dict(it)
    out.update({
        'workers': workers, 'grad_bytes': s.grad_bytes(),
        'iterations': iterations, 'iters_per_epoch': iters_per_epoch,
        'eval_s': eval_s, 'evaluations': evaluations,
        'epoch_s': iters_per_epoch * it['iteration_s'] + (eval_s if s.eval_every > 0 else 0.0),
        'train_s': train_s, 'total_s': train_s + evaluations * eval_s,
        'img_per_s_total': s.global_batch / it['iteration_s'],
        'efficiency': one / (workers * it['iteration_s']),
    })
    return out


def plan(s, workers_list):
    """`plan_one` for each worker count."""
    return [plan_one(s, int(w)) for w in workers_list]


# ------------------------------------------------------------------ presets

# Published times of the three record runs (seconds) and their settings.
PUBLISHED = {
    'pfn': (15 * 60.0, '15 min', 'Akiba et al. 2017 (arXiv 1711.04325)'),
    'goyal': (60 * 60.0, '1 h', 'Goyal et al. 2017 (arXiv 1706.02677)'),
    'fujitsu': (74.7, '74.7 s', 'Yamazaki et al. 2019 (arXiv 1903.12650)'),
}

# P100 ResNet-50 training rate. tensorflow.org/performance/benchmarks (TF 1.1,
# May 2017), NVIDIA DGX-1 (P100 SXM2), ResNet-50, batch 32, synthetic data:
# 195 images/s on 1 GPU (batch 64: 219). A framework-neutral published figure
# of the era; Chainer's own P100 rate was not published with the record.
P100_SXM2_IMG_PER_S = 195.0
# P100 PCIe vs SXM2 peak FP32: 9.3 vs 10.6 TFLOPS (NVIDIA Tesla P100 datasheet);
# the PCIe card's rate is the SXM2 rate scaled by that ratio.
P100_PCIE_IMG_PER_S = P100_SXM2_IMG_PER_S * 9.3 / 10.6
# V100 ResNet-50 training rate. NVIDIA DeepLearningExamples,
# MxNet/Classification/RN50v1.5/README.md, "Training performance: NVIDIA DGX-1
# (8x V100 16GB)", mixed precision, batch 192, 1 GPU: 1,376 images/s.
V100_MXNET_AMP_IMG_PER_S = 1376.0
# InfiniBand FDR 4X: 14.0625 Gb/s x 4 lanes, 64b/66b -> 54.5 Gb/s = 6.82 GB/s
# per link and direction (InfiniBand Trade Association roadmap / Mellanox spec).
IB_FDR_GBPS = 14.0625 * 4 * 64 / 66 / 8
# InfiniBand EDR 4X: 25.78125 Gb/s x 4, 64b/66b -> 100 Gb/s = 12.5 GB/s.
IB_EDR_GBPS = 25.78125 * 4 * 64 / 66 / 8
# Mellanox ConnectX-3/4 product briefs: MPI ping latency about 1 us (ConnectX-3
# "sub 1 us", ConnectX-4 "sub 0.6 us"); we use 1 us for InfiniBand links.
IB_ALPHA = 1e-6
# PCIe 3.0 x16: 8 GT/s x 16 lanes, 128b/130b -> 15.75 GB/s per direction (PCI-SIG).
PCIE3_X16_GBPS = 8 * 16 * 128 / 130 / 8
# NVLink 1.0 (P100 SXM2): 20 GB/s per link and direction (NVIDIA P100 whitepaper);
# NVLink 2.0 (V100 SXM2): 25 GB/s per link and direction (NVIDIA V100 whitepaper).
NVLINK1_GBPS = 20.0
NVLINK2_GBPS = 25.0
# Intra-node latency of a GPU-to-GPU step (CUDA IPC / NCCL): a few microseconds;
# we take 5 us [estimate, no vendor figure].
GPU_STEP_ALPHA = 5e-6
# 50 Gbit Ethernet: 6.25 GB/s (Goyal et al. [paper]: Mellanox ConnectX-4 50 GbE).
# Latency of a TCP message on a 50 GbE link: ~10 us [estimate; Gloo used TCP].
ETH50_GBPS = 50.0 / 8
ETH_ALPHA = 10e-6
# JPEG decode + random-size crop + resize of an average ImageNet image (~110 kB,
# ~400x350) with libjpeg-turbo: about 5 ms on one core of the 2017 Xeons, i.e.
# ~200 images/s per core [estimate; measure yours with `python -m pfn15.bench data`].
DECODE_PER_CORE = 200.0


def presets():
    """name -> Setup for the three record runs."""
    return {
        'pfn': Setup(
            name='pfn',
            img_per_s=P100_PCIE_IMG_PER_S,   # MN-1 has P100 PCIe (4.7 TFLOPS FP64 each: PFN blog)
            batch_per_worker=32, global_batch=32768, epochs=90,      # [paper]
            fp16_allreduce=True,             # [paper] half-precision gradient all-reduce
            algo='ring',                     # PFN blog "MN-1": "we used the ring allreduce algorithm"
            gpus_per_node=8,                 # 128 nodes x 8 P100 [PFN blog]
            inter_gbps=2 * IB_FDR_GBPS,      # "two FDR Infiniband links (56Gbps x 2)" [PFN blog]
            inter_alpha=IB_ALPHA,
            intra_gbps=PCIE3_X16_GBPS, intra_alpha=GPU_STEP_ALPHA,
            overlap=0.0,                     # ChainerMN 1.0 all-reduces after backward
            decode_per_core=DECODE_PER_CORE,
            cores_per_gpu=16 / 8.0,          # 2 x Xeon E5-2667 v4 (8 cores) per node [Akiba et al.]
            notes='1,024 P100 (MN-1), Chainer + ChainerMN + NCCL'),
        'goyal': Setup(
            name='goyal',
            img_per_s=P100_SXM2_IMG_PER_S,   # Big Basin: P100 SXM2 with NVLink [paper]
            batch_per_worker=32, global_batch=8192, epochs=90,       # [paper]
            fp16_allreduce=False,            # fp32 [paper]
            algo='hierarchical',             # [paper] sec. 4: reduce within the server,
                                             # all-reduce across servers, broadcast back
            gpus_per_node=8,                 # 32 servers x 8 P100 [paper]
            inter_gbps=ETH50_GBPS, inter_alpha=ETH_ALPHA,   # one 50 GbE port per server [paper]
            intra_gbps=NVLINK1_GBPS, intra_alpha=GPU_STEP_ALPHA,
            overlap=1.0,                     # [paper] sec. 4: aggregation runs in parallel
                                             # with backprop, layer by layer
            decode_per_core=DECODE_PER_CORE,
            cores_per_gpu=40 / 8.0,          # [estimate: a 2-socket 20-core head node per 8 GPUs]
            notes='256 P100 (Big Basin), Caffe2 + Gloo'),
        'fujitsu': Setup(
            name='fujitsu',
            img_per_s=V100_MXNET_AMP_IMG_PER_S,
            batch_per_worker=40, global_batch=81920,        # [paper]
            epochs=90,                       # [assumption: the standard 90-epoch budget]
            fp16_allreduce=True,             # [assumption: Tensor Core mixed precision, fp16 grads]
            algo='hierarchical',             # [assumption: NCCL inside the node, MPI across]
            gpus_per_node=4,                 # ABCI: 4 V100 SXM2 per node (ABCI system spec)
            inter_gbps=2 * IB_EDR_GBPS,      # ABCI: InfiniBand EDR x2 per node (ABCI spec;
                                             # Mikami et al. table)
            inter_alpha=IB_ALPHA,
            intra_gbps=NVLINK2_GBPS, intra_alpha=GPU_STEP_ALPHA,
            overlap=1.0,                     # [assumption: MXNet overlaps per-layer reductions]
            decode_per_core=DECODE_PER_CORE,
            cores_per_gpu=40 / 4.0,          # ABCI: 2 x Xeon Gold 6148 (20 cores) per node
            notes='2,048 V100 (ABCI), MXNet'),
    }


PRESET_WORKERS = {'pfn': 1024, 'goyal': 256, 'fujitsu': 2048}


# ------------------------------------------------------------------ calibration

def calibrate(setup, paths):
    """A Setup with the figures measured by `pfn15.bench` (step and/or allreduce JSON).

    step: per-worker images/s of the full pfn15 iteration (falls back to the
    bare loop), per-worker batch, gradient bytes and array count, the cores
    of the machine and threads per rank. allreduce: alpha and beta (ring
    model at the measured rank count) of ChainerMN's gradient all-reduce;
    with the naive communicator one call per array.
    The result models CPU ranks on one node: gpus_per_node = ranks per node
    (all on this machine), intra = inter = the measured alpha/beta.
    """
    s = dataclasses.replace(setup, name='calibrated', algo='ring', overlap=0.0,
                            fp16_allreduce=False, decode_per_core=None, cores_per_gpu=None,
                            gpus_per_node=1 << 20, train_images=setup.train_images)
    for path in paths:
        with open(path) as f:
            d = json.load(f)
        kind = d.get('kind')
        if kind == 'step':
            s.img_per_s = float(d.get('pfn15_img_per_s') or d['bare_img_per_s'])
            s.batch_per_worker = int(d['batch'])
            if d.get('microbatch_s'):   # the update split (bench step on CPU)
                s.img_per_s = s.batch_per_worker / float(d['microbatch_s'])
                s.update_overhead_s = float(d.get('update_overhead_s') or 0.0)
            if d.get('param_count'):
                s.params = float(d['param_count'])
            if d.get('param_arrays'):
                s.arrays = int(d['param_arrays'])
            if d.get('cpu_count') and d.get('device', 'cpu') == 'cpu':
                s.cores_per_node = float(d['cpu_count'])
                s.threads_per_worker = float(d.get('threads_per_worker') or 1)
        elif kind == 'allreduce':
            s.inter_alpha = s.intra_alpha = float(d['alpha_s'])
            beta = float(d['beta_s_per_byte'])
            s.inter_gbps = s.intra_gbps = 1.0 / beta / GB if beta > 0 else 1e9
            s.calls_per_array = d.get('comm', 'naive') == 'naive'
            if d.get('reduction') == 'canonical':   # one packed buffer, its own fit
                s.reduction, s.calls_per_array = 'canonical', False
        else:
            raise ValueError('%s: not a pfn15.bench step or allreduce JSON (kind=%r)'
                             % (path, kind))
    return s


# ------------------------------------------------------------------ output

def _fmt_time(sec):
    if sec >= 3600:
        return '%.2f h' % (sec / 3600.0)
    if sec >= 60:
        return '%.1f min' % (sec / 60.0)
    if sec >= 1:
        return '%.1f s' % sec
    return '%.1f ms' % (sec * 1e3)


def format_table(rows):
    head = ('workers', 'iter', 'compute', 'allreduce', 'exposed', 'epoch', 'total',
            'img/s', 'efficiency')
    lines = ['%7s %9s %9s %9s %9s %9s %10s %10s %10s' % head]
    for r in rows:
        lines.append('%7d %9s %9s %9s %9s %9s %10s %10.0f %9.1f%%%s' % (
            r['workers'], _fmt_time(r['iteration_s']), _fmt_time(r['compute_s']),
            _fmt_time(r['allreduce_s']), _fmt_time(r['exposed_comm_s']),
            _fmt_time(r['epoch_s']), _fmt_time(r['total_s']), r['img_per_s_total'],
            100 * r['efficiency'], ' (data-bound)' if r['data_bound'] else ''))
    return '\n'.join(lines)


def describe(s):
    return ('%s: %.0f img/s per worker at batch %d, global batch %d, %g epochs; gradients '
            '%.1f MB (%s, %d arrays%s); %s all-reduce, %s, inter %.2f GB/s alpha '
            '%.1f us, intra %.2f GB/s alpha %.1f us, overlap %.2f%s%s'
            % (s.name, s.img_per_s, s.batch_per_worker, s.global_batch, s.epochs,
               s.grad_bytes() / 1e6, 'fp16' if s.fp16_allreduce else 'fp32', s.arrays,
               ', one call each' if s.calls_per_array else '',
               'canonical-order' if s.reduction == 'canonical' else s.algo,
               'all ranks on one node' if s.gpus_per_node >= 1 << 20
               else '%d per node' % s.gpus_per_node,
               s.inter_gbps, s.inter_alpha * 1e6,
               s.intra_gbps, s.intra_alpha * 1e6, s.overlap,
               '; data ceiling %.0f img/s per worker' % s.data_img_per_s()
               if s.data_img_per_s() else '',
               '; %g cores per node, %g threads per rank' % (s.cores_per_node,
                                                             s.threads_per_worker)
               if s.cores_per_node else ''))


def compare_presets(names):
    """Rows of (name, workers, predicted total, train only, published, ratios)."""
    out = []
    ps = presets()
    for name in names:
        s = ps[name]
        r = plan_one(s, PRESET_WORKERS[name])
        pub, label, cite = PUBLISHED[name]
        out.append({'preset': name, 'workers': PRESET_WORKERS[name],
                    'global_batch': s.global_batch, 'iteration_s': r['iteration_s'],
                    'predicted_total_s': r['total_s'], 'predicted_train_s': r['train_s'],
                    'published_s': pub, 'published': label, 'source': cite,
                    'ratio': r['total_s'] / pub, 'ratio_train_only': r['train_s'] / pub,
                    'efficiency': r['efficiency']})
    return out


def format_comparison(rows):
    lines = ['%-8s %7s %7s %9s %11s %11s %10s %7s %11s' % (
        'preset', 'workers', 'batch', 'iter', 'predicted', 'train only', 'published',
        'ratio', 'ratio(train)')]
    for r in rows:
        lines.append('%-8s %7d %7d %9s %11s %11s %10s %7.2f %11.2f' % (
            r['preset'], r['workers'], r['global_batch'], _fmt_time(r['iteration_s']),
            _fmt_time(r['predicted_total_s']), _fmt_time(r['predicted_train_s']),
            r['published'], r['ratio'], r['ratio_train_only']))
    lines.append('ratio = predicted / published (train+eval and train only)')
    return '\n'.join(lines)


# Tick marks of a time axis: readable durations, not powers of ten of minutes.
TIME_TICKS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 5 * 3600,
              10 * 3600, 24 * 3600, 2 * 86400, 5 * 86400, 10 * 86400, 30 * 86400, 100 * 86400)


def _fmt_tick(sec):
    if sec >= 86400:
        return '%g d' % (sec / 86400.0)
    if sec >= 3600:
        return '%g h' % (sec / 3600.0)
    if sec >= 60:
        return '%g min' % (sec / 60.0)
    return '%g s' % sec


def plot_series(preset_rows, published=None):
    """What the plot draws: [(name, rows, (workers, seconds, label) or None)].

    `preset_rows`: {name: rows of `plan`}; `published`: {name: (workers, seconds,
    label)} for the presets whose record time is marked."""
    published = published or {}
    return [(name, rows, published.get(name)) for name, rows in preset_rows.items()]


def check_plot_path(path):
    """None if `path` can be written as a plot, else why not (one line)."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        return '--plot %s: the directory %s does not exist' % (path, d)
    if not os.access(d, os.W_OK):
        return '--plot %s: the directory %s is not writable' % (path, d)
    if os.path.isdir(path):
        return '--plot %s: is a directory' % path
    ext = os.path.splitext(path)[1].lower().lstrip('.')
    if ext not in ('png', 'pdf', 'svg', 'jpg', 'jpeg', 'eps', 'ps', 'tif', 'tiff', 'webp'):
        return ('--plot %s: unknown image type %r (use .png, .pdf or .svg)'
                % (path, ext or '(none)'))
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        return '--plot needs matplotlib (%s): pip install matplotlib' % e
    return None


def save_plot(series, path, title=''):
    """Time to train and scaling efficiency against workers, one colour per preset.

    `series`: see `plot_series`. Solid: total (training + evaluation); dashed
    on top: training only (often within a line's width of the total, so it is
    drawn thinner, above it). A star marks the published time of a record run,
    and each curve's last point carries its value."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 5.6))
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    workers, times = set(), []
    for n, (name, rows, pub) in enumerate(series):
        c = colours[n % len(colours)]
        w = [r['workers'] for r in rows]
        workers.update(w)
        total = [r['total_s'] for r in rows]
        train = [r['train_s'] for r in rows]
        times += total + train
        prefix = name + ': ' if len(series) > 1 else ''
        a1.plot(w, total, '-', color=c, lw=3.5, alpha=0.45, label=prefix + 'total (with eval)',
                zorder=2)
        a1.plot(w, train, '--', color=c, lw=1.4, marker='o', ms=3.5,
                label=prefix + 'training only', zorder=3)
        a1.annotate('%s\n(train %s)' % (_fmt_time(total[-1]), _fmt_time(train[-1])),
                    (w[-1], total[-1]), xytext=(6, 4), textcoords='offset points',
                    fontsize=8, color=c)
        if pub:
            pw, ps, plabel = pub
            times.append(ps)
            a1.plot([pw], [ps], '*', color=c, ms=14, mec='black', mew=0.6, zorder=4,
                    label='%spublished %s at %d' % (prefix, plabel, pw))
        a2.plot(w, [100 * r['efficiency'] for r in rows], 'o-', color=c, ms=3.5,
                label=name if len(series) > 1 else None)

    ticks = sorted(workers)
    if len(ticks) > 12:   # keep labels apart: powers of two only
        ticks = [t for t in ticks if t & (t - 1) == 0] or ticks
    for ax in (a1, a2):
        ax.set_xscale('log', base=2)
        ax.set_xlim(min(ticks) / 1.4, max(ticks) * 1.4)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: '%d' % round(x)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.tick_params(axis='x', labelrotation=45 if len(ticks) > 7 else 0, labelsize=8)
        ax.set_xlabel('workers (GPUs)')
        ax.grid(True, alpha=0.3)
    a1.set_yscale('log')
    lo, hi = min(times), max(times)
    a1.set_ylim(lo / 1.6, hi * 1.6)
    a1.yaxis.set_major_locator(FixedLocator([t for t in TIME_TICKS if lo / 1.6 <= t <= hi * 1.6]))
    a1.yaxis.set_major_formatter(FuncFormatter(lambda y, _: _fmt_tick(y)))
    a1.yaxis.set_minor_locator(NullLocator())
    a1.set_ylabel('time to train (log scale)')
    a1.set_title('time to train', fontsize=10)
    a1.set_xlim(min(ticks) / 1.4, max(ticks) * 6)   # room for the notes on the right
    # Below the axes, never over a curve.
    a1.legend(fontsize=7.5, loc='upper center', bbox_to_anchor=(0.5, -0.2),
              ncol=len(series), frameon=False)
    a2.set_ylim(0, 105)
    a2.set_ylabel('scaling efficiency (%)')
    a2.set_title('scaling efficiency vs one worker', fontsize=10)
    if len(series) > 1:
        a2.legend(fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.2),
                  ncol=len(series), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    drawn = {'x_ticks': [t.get_text() for t in a1.get_xticklabels()],
             'y_ticks': [t.get_text() for t in a1.get_yticklabels()],
             'legend': [t.get_text() for t in a1.get_legend().get_texts()],
             'lines': [(ln.get_label(), list(ln.get_ydata())) for ln in a1.get_lines()]}
    plt.close(fig)
    return drawn   # what a reader sees, for the tests


# ------------------------------------------------------------------ CLI

def _workers(text):
    try:
        ws = [int(x) for x in text.split(',') if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError('expected a comma-separated list of integers, got %r'
                                         % text)
    if not ws or min(ws) < 1:
        raise argparse.ArgumentTypeError('worker counts must be >= 1')
    return ws


def parse_args(argv):
    p = cli.ArgumentParser(prog='python -m pfn15.plan', description=__doc__.split('\n\n')[0],
                           epilog=cli.epilog(tool=True))
    p.add_argument('--preset', choices=('pfn', 'goyal', 'fujitsu', 'all'),
                   help='a record run: its hardware and settings (all: the comparison table)')
    p.add_argument('--calibrate', action='append', default=[], metavar='FILE.json',
                   help='bench step / bench allreduce JSON from this machine (repeatable)')
    p.add_argument('--workers', type=_workers, help='comma-separated worker counts')
    p.add_argument('--gpus-per-node', type=int, help='workers per node')
    p.add_argument('--batch-per-worker', type=int)
    p.add_argument('--global-batch', type=int)
    p.add_argument('--epochs', type=float)
    p.add_argument('--eval-every', type=float, help='epochs between evaluations (0: none)')
    p.add_argument('--img-per-s', type=float, help="one worker's training images/s")
    p.add_argument('--train-images', type=int, help='training set size (default ImageNet)')
    p.add_argument('--val-images', type=int, help='validation set size (default ImageNet)')
    p.add_argument('--params', type=float, help='parameter count (default 25.6e6)')
    p.add_argument('--arrays', type=int, help='parameter arrays')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--fp16-allreduce', dest='fp16', action='store_true', default=None)
    g.add_argument('--fp32-allreduce', dest='fp16', action='store_false')
    p.add_argument('--algo', choices=ALGOS)
    p.add_argument('--reduction', choices=('fast', 'canonical'),
                   help="comm.reduction: canonical models pfn15's fixed-tree all-reduce")
    p.add_argument('--overlap', type=float, help='fraction of the all-reduce that may '
                   'overlap the backward pass, 0..1')
    p.add_argument('--inter-gbps', type=float, help="a node's inter-node bandwidth, GB/s")
    p.add_argument('--inter-alpha-us', type=float)
    p.add_argument('--intra-gbps', type=float, help='intra-node link bandwidth, GB/s')
    p.add_argument('--intra-alpha-us', type=float)
    p.add_argument('--decode-per-core', type=float, help='decoded images/s per core')
    p.add_argument('--cores-per-gpu', type=float)
    p.add_argument('--plot', metavar='FILE.png')
    p.add_argument('--json', metavar='FILE', help='write the figures as JSON')
    return p.parse_args(argv)


def build_setup(args):
    if args.calibrate:
        base = presets()['pfn']
        s = calibrate(base, args.calibrate)
    else:
        name = args.preset if args.preset and args.preset != 'all' else 'pfn'
        s = dataclasses.replace(presets()[name])
    for flag, attr, scale in (
            ('gpus_per_node', 'gpus_per_node', 1), ('batch_per_worker', 'batch_per_worker', 1),
            ('global_batch', 'global_batch', 1), ('epochs', 'epochs', 1),
            ('eval_every', 'eval_every', 1), ('img_per_s', 'img_per_s', 1),
            ('train_images', 'train_images', 1), ('val_images', 'val_images', 1),
            ('params', 'params', 1), ('arrays', 'arrays', 1), ('fp16', 'fp16_allreduce', None),
            ('algo', 'algo', None), ('reduction', 'reduction', None), ('overlap', 'overlap', 1), ('inter_gbps', 'inter_gbps', 1),
            ('inter_alpha_us', 'inter_alpha', 1e-6), ('intra_gbps', 'intra_gbps', 1),
            ('intra_alpha_us', 'intra_alpha', 1e-6),
            ('decode_per_core', 'decode_per_core', 1), ('cores_per_gpu', 'cores_per_gpu', 1)):
        v = getattr(args, flag)
        if v is not None:
            setattr(s, attr, v * scale if scale not in (None, 1) else v)
    return s


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.plot:   # before the table: a bad path costs nothing
        why = check_plot_path(args.plot)
        if why:
            print('pfn15.plan: error: %s' % why, file=sys.stderr)
            return 2
    out = {}
    if args.preset == 'all' and not args.workers:
        rows = compare_presets(['pfn', 'goyal', 'fujitsu'])
        for name, s in presets().items():
            print(describe(s))
        print()
        print(format_comparison(rows))
        out['comparison'] = rows
        if args.plot:
            curves = {name: plan(s, default_workers(name)) for name, s in presets().items()}
            pubs = {r['preset']: (r['workers'], r['published_s'], r['published']) for r in rows}
            return _save(plot_series(curves, pubs), args.plot,
                         'the record runs: predicted vs published', out, args.json)
    else:
        s = build_setup(args)
        if args.workers:
            workers = args.workers
        elif args.preset and args.preset != 'all':
            workers = default_workers(args.preset)
        else:
            workers = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        if s.global_batch % s.batch_per_worker:
            raise errors.UserError('global batch %d is not a multiple of %d per worker'
                                   % (s.global_batch, s.batch_per_worker))
        rows = plan(s, workers)
        print(describe(s))
        print(format_table(rows))
        out['setup'] = dataclasses.asdict(s)
        out['rows'] = rows
        if args.preset in PUBLISHED:
            comp = compare_presets([args.preset])
            print()
            print(format_comparison(comp))
            out['comparison'] = comp
        if args.plot:
            pub = None
            if args.preset in PUBLISHED:
                pub = {s.name: (comp[0]['workers'], comp[0]['published_s'],
                                comp[0]['published'])}
            return _save(plot_series({s.name: rows}, pub), args.plot,
                         describe(s).split(';')[0], out, args.json)
    _write_json(args.json, out)
    return 0


def default_workers(preset):
    """1, 2, 4, ... up to the record run's worker count (and that count)."""
    top = PRESET_WORKERS[preset]
    return sorted(set([2 ** k for k in range(int(math.log2(top)) + 1)] + [top]))


def _write_json(path, out):
    if path:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        with open(path, 'w') as f:
            json.dump(out, f, indent=1)


def _save(series, path, title, out, json_path):
    try:
        save_plot(series, path, title)
    except (OSError, ValueError) as e:   # the disk filled, the format was refused
        print('pfn15.plan: error: --plot %s: %s' % (path, e), file=sys.stderr)
        return 2
    print('plot: %s' % path)
    _write_json(json_path, out)
    return 0


if __name__ == '__main__':
    sys.exit(cli.run(main, 'pfn15.plan'))
