"""Every CUDA kernel a GPU run of pfn15 compiles that Chainer does not ship tested, compiled here.

The kernels of every optimizer in pfn15.optimizers.REGISTRY (RMSpropWarmup's
and LARS's today) and ChainerMN's batched pack/unpack
and div_by_size kernels, in float32 and float16, for sm_60, sm_70, sm_80 and
sm_90, with NVRTC from NVIDIA's PyPI wheel (no GPU needed), through CuPy's
own code generation and compile path (tests/kernels/nvrtc_compile.py), on both
stacks: CuPy 13 (Python 3.11, NumPy 1) and CuPy 14 (Python 3.12, NumPy 2).
Each stack is a small venv the Makefile builds (`make install-kernels`):
CuPy + NVRTC + the CUDA runtime headers, nothing else.

The source texts come from where a GPU run takes them: the kernel specs in
pfn15.optimizers, ChainerMN's own code (the getters' and the communicator's
string constants), with pfn15.chainermn_patches applied.

Run alone: `make test-kernels`.
"""
import pfn15  # noqa: F401  (pfn15._compat before Chainer, on NumPy 2)
import json
import os
import subprocess

import pytest

from pfn15 import chainermn_patches, optimizers
from pfn15.optimizers import rmsprop_warmup

from helpers import ROOT

pytestmark = pytest.mark.slow   # once per `make test` (both stacks run from the 3.11 leg)

ARCHS = ['60', '70', '80', '90']
DTYPES = ['float32', 'float16']
STACKS = {   # name: (venv, what it is)
    'cupy13': ('.venv-kernels', 'CuPy 13, Python 3.11, NumPy 1'),
    'cupy14': ('.venv312-kernels', 'CuPy 14, Python 3.12, NumPy 2'),
}
# The world size div_by_size is generated for (its text has 1.0/size in it).
DIV_BY_SIZE_WORLD = 1024


def _div_by_size_spec():
    """ChainerMN's div_by_size (PureNcclCommunicator._multi_node_mean_nccl) constants."""
    from chainermn.communicators.pure_nccl_communicator import PureNcclCommunicator
    consts = PureNcclCommunicator._multi_node_mean_nccl.__code__.co_consts
    assert '{} x' in consts and 'x *= (1.0/{})' in consts and 'div_by_size' in consts, \
        'ChainerMN\'s div_by_size kernel changed; update this test'
    return '', '{} x', 'x *= (1.0/{})', 'div_by_size'


def optimizer_kernels(entries=None):
    """[(id, spec dict)] of every kernel case of every registered optimizer."""
    out = []
    for entry in (optimizers.REGISTRY if entries is None else entries):
        for case in entry.kernels():
            spec = case.spec
            for kid, dtype in case.ids():
                job = dict(kind='elementwise', in_params=spec.in_params,
                           out_params=spec.out_params, operation=spec.operation,
                           name=spec.name, preamble=spec.preamble, arrays=list(case.arrays))
                if case.typed:
                    job['types'] = {'T': dtype}
                if case.broadcast:
                    job['broadcast'] = list(case.broadcast)
                out.append((kid, job))
    return out


def kernels():
    """The compile job: [(id, spec dict)]; ids say kernel/dtype."""
    out = optimizer_kernels()
    in_params, out_fmt, op_fmt, name = _div_by_size_spec()
    for dtype in DTYPES:
        out.append(('chainermn_div_by_size/%s' % dtype, dict(
            kind='elementwise', in_params=in_params, out_params=out_fmt.format(dtype),
            operation=op_fmt.format(DIV_BY_SIZE_WORLD), name=name, arrays=['x'])))
    # The pack/unpack kernels convert between dtypes at run time: one text each.
    for name, code in sorted(chainermn_patches.patched_kernel_sources().items()):
        out.append(('chainermn_%s/patched' % name, dict(kind='raw', code=code, name=name)))
    for name, code in sorted(chainermn_patches.unpatched_kernel_sources().items()):
        out.append(('chainermn_%s/unpatched' % name, dict(kind='raw', code=code, name=name)))
    return out


def _python(stack):
    venv = os.environ.get('PFN15_KERNEL_VENV_' + stack.upper(),
                          os.path.join(ROOT, STACKS[stack][0]))
    python = os.path.join(venv, 'bin', 'python')
    if os.path.exists(python):
        return python
    required = os.environ.get('PFN15_KERNEL_STACKS', '').split(',')
    message = ('%s (%s) not found: `make install-kernels` builds it'
               % (os.path.join(venv, 'bin', 'python'), STACKS[stack][1]))
    if stack in required:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope='module', params=sorted(STACKS))
def compiled(request):
    stack = request.param
    python = _python(stack)
    job = kernels()
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONNOUSERSITE='1')
    proc = subprocess.run([python, os.path.join(ROOT, 'tests', 'kernels', 'nvrtc_compile.py')],
                          input=json.dumps({'archs': ARCHS, 'kernels': [
                              dict(spec, id=kid) for kid, spec in job]}),
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    report['name'] = stack
    report['by_id'] = {}
    for r in report['results']:
        report['by_id'].setdefault(r['id'], {})[r['arch']] = r
    return report


def test_every_kernel_compiles_for_every_arch(compiled):
    expected = [kid for kid, _ in kernels() if not kid.endswith('/unpatched')]
    assert len(expected) == 2 * 2 + 2 + 1 + 2 + 2
    failures = []
    for kid in expected:
        for arch in ARCHS:
            r = compiled['by_id'][kid][arch]
            if not r['ok']:
                failures.append('%s sm_%s: %s' % (kid, arch, r.get('log', '')[-800:]))
            else:
                assert r['bytes'] > 1000   # a real cubin
    assert not failures, '%s (%s):\n%s' % (compiled['name'], compiled['stack'],
                                           '\n'.join(failures))
    # the NVRTC that compiled them is the pip wheel's (pfn15.cuda_libs loaded it)
    assert '/nvidia/cuda_nvrtc/lib/libnvrtc.so' in compiled['stack']['nvrtc_library']
    expected_cupy = {'cupy13': '13.', 'cupy14': '14.'}[compiled['name']]
    assert compiled['stack']['cupy'].startswith(expected_cupy)


def test_unpatched_chainermn_kernels(compiled):
    """ChainerMN 7.8.1's own pack/unpack text: compiles on CuPy 13, fails on CuPy 14 ('half')."""
    for name in ('cupy_batched_pack_params', 'cupy_batched_unpack_params'):
        results = compiled['by_id']['chainermn_%s/unpatched' % name]
        if compiled['name'] == 'cupy13':
            assert all(r['ok'] for r in results.values()), results
        else:
            for arch, r in results.items():
                assert not r['ok'], 'the unpatched %s compiled on CuPy 14 (sm_%s)' % (name, arch)
                assert 'identifier "half" is undefined' in r['log'], r['log'][-800:]


def test_a_kernel_that_does_not_compile_fails(compiled):
    """The harness reports NVRTC's error (so a broken kernel fails make test)."""
    python = _python(compiled['name'])
    spec = rmsprop_warmup.KERNEL
    broken = dict(kind='elementwise', in_params=spec.in_params, out_params=spec.out_params,
                  operation=spec.operation.replace('sqrt(', 'sqrtt('), name='broken',
                  preamble=spec.preamble, types={'T': 'float32'},
                  arrays=['grad', 'param', 'm', 'v'], id='broken')
    proc = subprocess.run([python, os.path.join(ROOT, 'tests', 'kernels', 'nvrtc_compile.py')],
                          input=json.dumps({'archs': ['80'], 'kernels': [broken]}),
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT, PYTHONNOUSERSITE='1'))
    (r,) = json.loads(proc.stdout)['results']
    assert not r['ok'] and 'sqrtt' in r['log']
