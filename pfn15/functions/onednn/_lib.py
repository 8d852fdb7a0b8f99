"""oneDNN 3.x C API through ctypes: the library, one CPU engine and stream, cached primitives.

What the functions in this package need from oneDNN and no more: memory
descriptors of plain layouts, primitive descriptors created once per shape
(`cached`), primitives executed on NumPy buffers (`Primitive`), a
scratchpad shared by all primitives (user scratchpad mode: one buffer, grown
to the largest request, instead of one allocation per execution), and
reorders (weights into the layout the convolution chose, float32 <-> bf16).

The library is `libdnnl.so.3` from the `onednn-cpu-gomp` wheel (GNU OpenMP),
found next to the Python environment (sys.prefix/lib) or on the loader's
path. The enum values are those of oneDNN 3.2's dnnl_types.h (stable over
3.x).
"""
import ctypes
import os
import sys
import threading

import numpy

# dnnl_data_type_t
F32, BF16 = 3, 2
# dnnl_format_tag_t
ANY, TAG_A, TAG_AB, TAG_ABCD, TAG_ACDB = 1, 2, 3, 5, 22
# dnnl_prop_kind_t
FORWARD_TRAINING, FORWARD_INFERENCE, BACKWARD, BACKWARD_DATA, BACKWARD_WEIGHTS = 64, 96, 128, 160, 192
# dnnl_alg_kind_t
CONVOLUTION_DIRECT = 0x1
ELTWISE_RELU = 0x20
ELTWISE_RELU_USE_DST = 0x100
POOLING_MAX = 0x1ff
POOLING_AVG_EXCLUDE_PADDING = 0x3ff
BINARY_ADD = 0x1fff0
# dnnl_normalization_flags_t
USE_GLOBAL_STATS, USE_SCALE, USE_SHIFT, FUSE_NORM_RELU = 0x1, 0x2, 0x4, 0x8
# DNNL_ARG_*
ARG_SRC, ARG_SRC_1, ARG_DST, ARG_WEIGHTS, ARG_MEAN, ARG_VARIANCE = 1, 2, 17, 33, 49, 50
ARG_SCALE, ARG_SHIFT, ARG_WORKSPACE, ARG_SCRATCHPAD = 51, 52, 64, 80
ARG_DIFF_SRC, ARG_DIFF_DST, ARG_DIFF_WEIGHTS = 129, 145, 161
ARG_DIFF_SCALE, ARG_DIFF_SHIFT = 255, 256
# dnnl_query_t
QUERY_IMPL_INFO_STR, QUERY_EXEC_ARG_MD = 8, 255
QUERY_SCRATCHPAD_MD, QUERY_WORKSPACE_MD = 136, 135
SCRATCHPAD_MODE_USER = 1
CPU_ENGINE, STREAM_DEFAULT = 1, 1

Dims = ctypes.c_int64 * 12
_p = ctypes.c_void_p


class ExecArg(ctypes.Structure):
    _fields_ = [('arg', ctypes.c_int), ('memory', _p)]


class Version(ctypes.Structure):
    _fields_ = [('major', ctypes.c_int), ('minor', ctypes.c_int), ('patch', ctypes.c_int),
                ('hash', ctypes.c_char_p), ('cpu_runtime', ctypes.c_uint),
                ('gpu_runtime', ctypes.c_uint)]


class OneDNNError(RuntimeError):
    pass


_lib = None
_load_error = None
_engine = _stream = None
_lock = threading.Lock()


def _candidates():
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix,
                                 os.path.dirname(os.path.dirname(sys.executable)))):
        yield os.path.join(prefix, 'lib', 'libdnnl.so.3')
    yield 'libdnnl.so.3'


def load():
    """The library (ctypes.CDLL), or None when it does not load (reason: load_error())."""
    global _lib, _load_error, _engine, _stream
    if _lib is not None or _load_error is not None:
        return _lib
    with _lock:
        if _lib is not None or _load_error is not None:
            return _lib
        # GNU OpenMP's threads spin a while after each parallel region (read once,
        # when libgomp loads). Where the node's ranks and loader processes want more
        # cores than it has, a spinning team holds cores they need: sleep at once.
        # Where they fit, libgomp's default (spin, then sleep) starts the next
        # primitive sooner. Unknown (set_threads not called yet): sleep.
        if not _fits_node:
            os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
        errors = []
        for path in _candidates():
            if os.path.isabs(path) and not os.path.exists(path):
                continue
            try:
                lib = ctypes.CDLL(path)
                break
            except OSError as e:
                errors.append(str(e))
        else:
            _load_error = ('libdnnl.so.3 not found (pip install onednn-cpu-gomp==2023.2.0)'
                           + ('; ' + errors[-1] if errors else ''))
            return None
        _declare(lib)
        v = lib.dnnl_version().contents
        if v.major != 3:
            _load_error = 'oneDNN %d.%d found, pfn15 needs 3.x' % (v.major, v.minor)
            return None
        engine, stream = _p(), _p()
        _check(lib.dnnl_engine_create(ctypes.byref(engine), CPU_ENGINE, 0), 'engine_create')
        _check(lib.dnnl_stream_create(ctypes.byref(stream), engine, STREAM_DEFAULT),
               'stream_create')
        _engine, _stream = engine, stream
        _lib = lib
        _apply_threads()
    return _lib


def load_error():
    load()
    return _load_error


def version():
    lib = load()
    if lib is None:
        return None
    v = lib.dnnl_version().contents
    return '%d.%d.%d' % (v.major, v.minor, v.patch)


def _declare(lib):
    S = ctypes.c_int
    sig = {
        'dnnl_version': (ctypes.POINTER(Version), []),
        'dnnl_engine_create': (S, [_p, S, ctypes.c_size_t]),
        'dnnl_stream_create': (S, [_p, _p, ctypes.c_uint]),
        'dnnl_stream_wait': (S, [_p]),
        'dnnl_memory_desc_create_with_tag': (S, [_p, S, Dims, S, S]),
        'dnnl_memory_desc_create_with_strides': (S, [_p, S, Dims, S, Dims]),
        'dnnl_memory_desc_destroy': (S, [_p]),
        'dnnl_memory_desc_get_size': (ctypes.c_size_t, [_p]),
        'dnnl_memory_desc_equal': (S, [_p, _p]),
        'dnnl_memory_create': (S, [_p, _p, _p, _p]),
        'dnnl_memory_set_data_handle': (S, [_p, _p]),
        'dnnl_primitive_desc_query_md': (_p, [_p, S, S]),
        'dnnl_primitive_desc_query': (S, [_p, S, S, _p]),
        'dnnl_primitive_create': (S, [_p, _p]),
        'dnnl_primitive_execute': (S, [_p, _p, S, _p]),
        'dnnl_primitive_attr_create': (S, [_p]),
        'dnnl_primitive_attr_set_scratchpad_mode': (S, [_p, S]),
        'dnnl_primitive_attr_set_post_ops': (S, [_p, _p]),
        'dnnl_post_ops_create': (S, [_p]),
        'dnnl_post_ops_append_eltwise': (S, [_p, S, ctypes.c_float, ctypes.c_float]),
        'dnnl_get_effective_cpu_isa': (S, []),
        'dnnl_convolution_forward_primitive_desc_create':
            (S, [_p, _p, S, S, _p, _p, _p, _p, Dims, Dims, Dims, Dims, _p]),
        'dnnl_convolution_backward_data_primitive_desc_create':
            (S, [_p, _p, S, _p, _p, _p, Dims, Dims, Dims, Dims, _p, _p]),
        'dnnl_convolution_backward_weights_primitive_desc_create':
            (S, [_p, _p, S, _p, _p, _p, _p, Dims, Dims, Dims, Dims, _p, _p]),
        'dnnl_batch_normalization_forward_primitive_desc_create':
            (S, [_p, _p, S, _p, _p, ctypes.c_float, ctypes.c_uint, _p]),
        'dnnl_batch_normalization_backward_primitive_desc_create':
            (S, [_p, _p, S, _p, _p, _p, ctypes.c_float, ctypes.c_uint, _p, _p]),
        'dnnl_pooling_forward_primitive_desc_create':
            (S, [_p, _p, S, S, _p, _p, Dims, Dims, Dims, Dims, Dims, _p]),
        'dnnl_pooling_backward_primitive_desc_create':
            (S, [_p, _p, S, _p, _p, Dims, Dims, Dims, Dims, Dims, _p, _p]),
        'dnnl_eltwise_forward_primitive_desc_create':
            (S, [_p, _p, S, S, _p, _p, ctypes.c_float, ctypes.c_float, _p]),
        'dnnl_eltwise_backward_primitive_desc_create':
            (S, [_p, _p, S, _p, _p, _p, ctypes.c_float, ctypes.c_float, _p, _p]),
        'dnnl_binary_primitive_desc_create': (S, [_p, _p, S, _p, _p, _p, _p]),
        'dnnl_matmul_primitive_desc_create': (S, [_p, _p, _p, _p, _p, _p, _p]),
        'dnnl_reorder_primitive_desc_create': (S, [_p, _p, _p, _p, _p, _p]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args


_STATUS = {1: 'out of memory', 2: 'invalid arguments', 3: 'unimplemented',
           4: 'last implementation reached', 5: 'runtime error', 6: 'not required'}


def _check(status, what):
    if status != 0:
        raise OneDNNError('oneDNN %s failed: %s (status %d)'
                          % (what, _STATUS.get(status, '?'), status))


def dims(values):
    d = Dims()
    for i, v in enumerate(values):
        d[i] = int(v)
    return d


_mds = {}


def md(shape, dtype=F32, tag=None, strides=None):
    """A memory descriptor (cached; never destroyed): logical dims `shape`, layout
    `tag` (default: NHWC for 4-D, plain otherwise; ANY lets the primitive choose),
    or, given `strides`, a plain array with those element strides (a transposed
    matrix, for instance)."""
    if strides is not None:
        key = (tuple(shape), dtype, 'strides', tuple(strides))
    else:
        if tag is None:
            tag = {1: TAG_A, 2: TAG_AB, 4: TAG_ACDB}[len(shape)]
        key = (tuple(shape), dtype, tag)
    m = _mds.get(key)
    if m is None:
        m = _p()
        if strides is not None:
            st = load().dnnl_memory_desc_create_with_strides(ctypes.byref(m), len(shape),
                                                             dims(shape), dtype, dims(strides))
        else:
            st = load().dnnl_memory_desc_create_with_tag(ctypes.byref(m), len(shape),
                                                         dims(shape), dtype, tag)
        _check(st, 'memory_desc_create')
        _mds[key] = m
    return m


def attr(post_relu=False):
    """Primitive attributes: user scratchpad, optionally a ReLU post-op."""
    lib = load()
    a = _p()
    _check(lib.dnnl_primitive_attr_create(ctypes.byref(a)), 'attr_create')
    _check(lib.dnnl_primitive_attr_set_scratchpad_mode(a, SCRATCHPAD_MODE_USER), 'scratchpad')
    if post_relu:
        po = _p()
        _check(lib.dnnl_post_ops_create(ctypes.byref(po)), 'post_ops_create')
        _check(lib.dnnl_post_ops_append_eltwise(po, ELTWISE_RELU, 0.0, 0.0), 'post_ops')
        _check(lib.dnnl_primitive_attr_set_post_ops(a, po), 'set_post_ops')
    return a


def create_pd(fn_name, *args):
    """A primitive descriptor from dnnl_<fn_name>_primitive_desc_create(&pd, args...)."""
    pd = _p()
    _check(getattr(load(), 'dnnl_%s_primitive_desc_create' % fn_name)(ctypes.byref(pd), *args),
           fn_name + ' primitive_desc_create')
    return pd


def arg_md(pd, arg):
    return load().dnnl_primitive_desc_query_md(pd, QUERY_EXEC_ARG_MD, arg)


def md_size(m):
    return load().dnnl_memory_desc_get_size(m) if m else 0


def md_equal(a, b):
    return bool(load().dnnl_memory_desc_equal(a, b))


def impl_name(pd):
    s = ctypes.c_char_p()
    _check(load().dnnl_primitive_desc_query(pd, QUERY_IMPL_INFO_STR, 0, ctypes.byref(s)),
           'query impl')
    return s.value.decode()


class _Scratchpad:
    """One buffer for every primitive's scratchpad, grown to the largest request."""

    def __init__(self):
        self.buf = numpy.empty(0, numpy.uint8)

    def pointer(self, size):
        if size + 4096 > self.buf.size:
            self.buf = numpy.empty(size + 8192, numpy.uint8)
        start = ptr(self.buf)
        return start + (-start % 4096)   # page-aligned


_scratchpad = _Scratchpad()


class Primitive:
    """A oneDNN primitive with one memory object per argument; calling it points
    the memory objects at the given buffers and executes."""

    def __init__(self, pd, arg_ids):
        lib = load()
        self.pd = pd
        self.prim = _p()
        _check(lib.dnnl_primitive_create(ctypes.byref(self.prim), pd), 'primitive_create')
        self.scratch_size = md_size(lib.dnnl_primitive_desc_query_md(pd, QUERY_SCRATCHPAD_MD, 0))
        ids = list(arg_ids) + ([ARG_SCRATCHPAD] if self.scratch_size else [])
        self.ids = ids
        self.mds = {}
        self.args = (ExecArg * len(ids))()
        self.mems = []
        for i, a in enumerate(ids):
            m = arg_md(pd, a)
            if not m:
                raise OneDNNError('oneDNN primitive has no argument %d' % a)
            mem = _p()
            _check(lib.dnnl_memory_create(ctypes.byref(mem), m, _engine, None), 'memory_create')
            self.mds[a] = m
            self.mems.append(mem)
            self.args[i].arg = a
            self.args[i].memory = mem
        self._set = lib.dnnl_memory_set_data_handle
        self._exec = lib.dnnl_primitive_execute
        self._wait = lib.dnnl_stream_wait
        self._nargs = len(ids)

    def size(self, arg):
        return md_size(self.mds[arg])

    def __call__(self, *pointers):
        """Execute with buffers (addresses, in the order of arg_ids)."""
        s = self._set
        for mem, ptr in zip(self.mems, pointers):
            s(mem, ptr)
        if self.scratch_size:
            s(self.mems[-1], _scratchpad.pointer(self.scratch_size))
        _check(self._exec(self.prim, _stream, self._nargs, self.args), 'execute')
        _check(self._wait(_stream), 'stream_wait')


_cache = {}


def cached(key, make):
    """The object make() built for `key` the first time (primitives per shape)."""
    p = _cache.get(key)
    if p is None:
        p = _cache[key] = make()
    return p


def _addr(m):
    return m.value if isinstance(m, _p) else m


def reorder(src_md, dst_md):
    """A cached reorder primitive src_md -> dst_md (arguments: src, dst)."""
    def make():
        pd = _p()
        _check(load().dnnl_reorder_primitive_desc_create(ctypes.byref(pd), src_md, _engine,
                                                         dst_md, _engine, attr()),
               'reorder primitive_desc_create')
        return Primitive(pd, (ARG_SRC, ARG_DST))
    return cached(('reorder', _addr(src_md), _addr(dst_md)), make)


def ptr(a):
    """The address of a NumPy array's data. ctypes.addressof of its buffer takes a
    third of a.ctypes.data's time, and the oneDNN calls take ~2,000 addresses a
    step; a read-only or non-contiguous array has no writable buffer to lend."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def engine():
    load()
    return _engine


# Threads: this build runs on GNU OpenMP; oneDNN uses as many threads as the
# OpenMP runtime's default team of the calling thread.
_threads = None
_fits_node = False


def set_threads(n, fits_node=False):
    """Give oneDNN n threads (the rank's share, pfn15/cpu.py); applied now if the
    library is loaded, else when it loads. fits_node: the node's ranks x threads
    and loader processes fit its cores (the wait policy at load; see load())."""
    global _threads, _fits_node
    _threads = int(n)
    _fits_node = bool(fits_node)
    if _lib is not None:
        _apply_threads()


def _apply_threads():
    if _threads is None:
        return
    try:
        gomp = ctypes.CDLL('libgomp.so.1')   # the runtime libdnnl.so.3 links
    except OSError:
        return
    gomp.omp_set_num_threads.argtypes = [ctypes.c_int]
    gomp.omp_set_num_threads(_threads)
