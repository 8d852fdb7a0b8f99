"""Compile CUDA kernels with NVRTC the way CuPy does on a GPU, on a machine without one.

Run by tests/kernels/test_kernels_nvrtc.py inside a kernel venv (CuPy + NVIDIA's
NVRTC and CUDA-runtime wheels; see the Makefile): reads a JSON job on stdin,
writes JSON results on stdout.

    {"archs": ["60", "90"], "kernels": [
        {"id": ..., "kind": "elementwise", "in_params": ..., "out_params": ...,
         "operation": ..., "name": ..., "preamble": ..., "types": {"T": "float16"},
         "arrays": [names], "broadcast": [names of 0-d arrays broadcast]},
        {"id": ..., "kind": "raw", "code": ..., "name": ...}]}

Elementwise kernels: the source text comes from CuPy's own code generator
(cupy._core._kernel._get_elementwise_kernel_code, which ElementwiseKernel's
__call__ uses), with the argument descriptions (_ArgInfo) a call with
contiguous 1-D arrays and NumPy scalars would produce. Raw kernels: the text
as given (RawKernel compiles its code unchanged). Both are compiled by
cupy._core.core.compile_with_cache -- CuPy's options, include paths and NVRTC
call -- for an explicit architecture; only the final step that needs a GPU,
loading the binary into a CUDA context, is replaced by keeping its size.
"""
import json
import os
import sys
import tempfile

# Before CuPy loads: pfn15.cuda_libs makes CuPy 13 find the NVRTC wheel.
import pfn15  # noqa: F401,E402

import numpy  # noqa: E402
import cupy  # noqa: E402
from cupy._core import _carray, _kernel, _scalar, core  # noqa: E402
from cupy.cuda import compiler, function  # noqa: E402

ARG_KIND_NDARRAY, ARG_KIND_INDEXER, ARG_KIND_SCALAR = 1, 2, 3   # cupy/_core/_kernel.pxd


class _Binary(function.Module):
    """cupy.cuda.function.Module that keeps the compiled binary's size instead of loading it."""

    size = None

    def load(self, cubin):
        type(self).size = len(cubin)


class _ModuleFactory(object):
    Module = _Binary

    def __getattr__(self, name):   # anything else compiler.py uses from `function`
        raise AttributeError('nvrtc_compile: compiler.function.%s is not available' % name)


def elementwise_source(k):
    ek = cupy.ElementwiseKernel(k['in_params'], k['out_params'], k['operation'], k['name'],
                                preamble=k.get('preamble', ''))
    types = {name: numpy.dtype(t).type for name, t in k.get('types', {}).items()}
    arrays, broadcast = set(k.get('arrays', ())), set(k.get('broadcast', ()))
    arginfos, in_types = [], []
    for i, p in enumerate(ek.params[:-1]):   # the last one is the indexer, _ind
        dtype = p.dtype if p.dtype is not None else types[p.ctype]
        if p.name in arrays or p.name in broadcast:
            arginfos.append(_kernel._ArgInfo(ARG_KIND_NDARRAY, cupy.ndarray, dtype, 1,
                                             p.name not in broadcast, True))
            t = dtype
        else:
            arginfos.append(_kernel._ArgInfo(ARG_KIND_SCALAR, _scalar.CScalar, dtype, 0,
                                             True, True))
            t = None
        if i < ek.nin:
            in_types.append(t)
    out_types = tuple(a.dtype for a in arginfos[ek.nin:])
    _, _, type_map = ek._decide_params_type(tuple(in_types), out_types)
    arginfos.append(_kernel._ArgInfo(ARG_KIND_INDEXER, _carray.Indexer, None, 1, True, True))
    return _kernel._get_elementwise_kernel_code(
        tuple(arginfos), type_map, ek.params, ek.operation, ek.name, ek.preamble,
        **ek.kwargs), True


def compile_one(source, prepend_cupy_headers, arch):
    _Binary.size = None
    core.compile_with_cache(source, (), arch=arch, prepend_cupy_headers=prepend_cupy_headers)
    return _Binary.size


def main():
    job = json.load(sys.stdin)
    os.environ['CUPY_CACHE_DIR'] = tempfile.mkdtemp(prefix='pfn15-nvrtc-')   # compile afresh
    compiler.function = _ModuleFactory()
    # CuPy caches the -arch option per current device, which asks the driver for
    # one; the function itself (arch given) needs no GPU.
    compiler._get_arch_for_options_for_nvrtc = compiler._get_arch_for_options_for_nvrtc.__wrapped__
    results = []
    for k in job['kernels']:
        try:
            if k['kind'] == 'elementwise':
                source, prepend = elementwise_source(k)
            else:
                source, prepend = k['code'], False
        except Exception as e:
            results.extend({'id': k['id'], 'arch': a, 'ok': False,
                            'log': 'code generation: %s: %s' % (type(e).__name__, e)}
                           for a in job['archs'])
            continue
        for arch in job['archs']:
            try:
                size = compile_one(source, prepend, arch)
                results.append({'id': k['id'], 'arch': arch, 'ok': bool(size), 'bytes': size})
            except Exception as e:
                results.append({'id': k['id'], 'arch': arch, 'ok': False,
                                'log': '%s: %s' % (type(e).__name__, e)})
    from cupy.cuda import nvrtc
    json.dump({'results': results, 'stack': {
        'python': sys.version.split()[0], 'numpy': numpy.__version__,
        'cupy': cupy.__version__, 'nvrtc': '%d.%d' % nvrtc.getVersion(),
        'nvrtc_library': pfn15.cuda_libs.loaded_path('libnvrtc.so')}}, sys.stdout)


if __name__ == '__main__':
    main()
