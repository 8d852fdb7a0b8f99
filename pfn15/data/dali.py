"""The DALI decoder (data.decoder=dali): the PIL transform's samples and windows, decoded by DALI.

Nothing about *what* is trained changes: the training iterator
(pfn15.data.iterator) still walks this rank's slots of the global order, and
for each sample this module draws the crop window and flip from the same
per-sample generator the PIL transform uses (pfn15.data.transforms, keyed by
(seed, epoch, index)), from the image size in the JPEG header. The encoded
bytes (read here from a file or a packed shard) and the windows go into a
DALI pipeline by external source, as per-sample arguments:

    bytes --decoders.image_slice(window)--> resize(crop x crop, linear, antialias)
          --crop_mirror_normalize(flip, mean, std, CHW float32)--> batch

so the worker-count invariance of the PIL path holds here too: the same
samples, the same windows, the same pixels whichever rank decodes them.

Where it runs: device='mixed' (nvJPEG; the decode on the GPU) with
train.device=gpu, and the batch is handed to CuPy by DLPack on the device
(no host copy); otherwise DALI's CPU-only mode (device_id=None). The pixels
differ from PIL's by the decoders' IDCT and resampling (PIL decodes at a
reduced DCT scale where the window allows): tests/unit/test_dali.py states the
bound. Validation is the same "shorter side to val_resize, centre crop" box,
as a resize region of interest.

Bad data keeps the PIL path's semantics: a file that cannot be read is
missing data (exit 2); an image DALI cannot decode is found by decoding the
failed batch sample by sample and counted (data.bad_images=skip, under
data.max_bad_fraction) with the mean image standing in, or stops the run
(data.bad_images=error).
"""
import io

import numpy
from PIL import Image

from pfn15.data import transforms


def read_bytes(source):
    """The encoded bytes of a path or a packed sample (pfn15.data.packed.Sample)."""
    if isinstance(source, str):
        with open(source, 'rb') as f:
            return f.read()
    return source.read()


def header_size(data):
    """(width, height) from the image header alone (no decode)."""
    with Image.open(io.BytesIO(data)) as img:
        return img.size


class Decoder:
    """One DALI pipeline of `batch_size` samples: (bytes, window, flip) -> float32 CHW."""

    def __init__(self, transform, batch_size, threads=1, device_id=None, train=True):
        self.transform = transform
        self.batch_size = batch_size
        self.device_id = device_id
        self.train = train
        self.threads = max(1, threads)
        self.pipe = self._build()

    def _build(self):
        from nvidia.dali import fn, pipeline, types
        transform, train = self.transform, self.train
        size = transform.crop_size
        pipe = pipeline.Pipeline(batch_size=self.batch_size, num_threads=self.threads,
                                 device_id=self.device_id, exec_async=False, exec_pipelined=False,
                                 prefetch_queue_depth=1)
        decode_on = 'cpu' if self.device_id is None else 'mixed'
        with pipe:
            data = fn.external_source(name='data', dtype=types.UINT8, ndim=1)
            start = fn.external_source(name='start', dtype=types.FLOAT, ndim=1)
            end = fn.external_source(name='end', dtype=types.FLOAT, ndim=1)
            flip = fn.external_source(name='flip', dtype=types.INT32, ndim=0)
            if train:
                # Integer windows in (x, y): decode the window only (ROI decoding).
                img = fn.decoders.image_slice(data, start, end - start, device=decode_on,
                                              output_type=types.RGB, axis_names='WH',
                                              normalized_anchor=False, normalized_shape=False)
                img = fn.resize(img, resize_x=size, resize_y=size,
                                interp_type=types.INTERP_LINEAR, antialias=True)
            else:
                # The centre box has fractional edges: a resize region of interest (y, x).
                img = fn.decoders.image(data, device=decode_on, output_type=types.RGB)
                img = fn.resize(img, size=[size, size], roi_start=start, roi_end=end,
                                roi_relative=False, interp_type=types.INTERP_LINEAR,
                                antialias=True)
            mean = [float(v) for v in transform.mean.ravel()]
            std = [float(1.0 / v) for v in transform.inv_std.ravel()]
            out = fn.crop_mirror_normalize(img, mirror=flip, mean=mean, std=std,
                                           dtype=types.FLOAT, output_layout='CHW')
            pipe.set_outputs(out)
        pipe.build()
        return pipe

    def window(self, width, height, rng):
        """(start, end, flip) of a sample: the PIL transform's draws, in its order."""
        t = self.transform
        if self.train:
            x0, y0, x1, y1 = t.crop_box(width, height, rng)
            flip = int(rng.randint(2) == 1)
            return (numpy.array([x0, y0], numpy.float32),
                    numpy.array([x1, y1], numpy.float32), flip)
        x0, y0, x1, y1 = transforms.center_crop_box(width, height, t.crop_size, t.val_resize)
        return (numpy.array([y0, x0], numpy.float32), numpy.array([y1, x1], numpy.float32), 0)

    def feeds(self, examples):
        """(bytes array, start, end, flip) of good (path, key) pairs (the benchmark's)."""
        out = []
        for source, key in examples:
            data = read_bytes(source)
            w, h = header_size(data)
            rng = transforms.sample_random_state(self.transform.seed, *key)
            out.append((numpy.frombuffer(data, numpy.uint8),) + self.window(w, h, rng))
        return out

    def run_batch(self, feeds):
        """DALI's output batch (a TensorList, CPU or GPU) of `feeds`, at most batch_size
        [(bytes array, start, end, flip)]."""
        p = self.pipe
        p.feed_input('data', [f[0] for f in feeds])
        p.feed_input('start', [f[1] for f in feeds])
        p.feed_input('end', [f[2] for f in feeds])
        p.feed_input('flip', [numpy.int32(f[3]) for f in feeds])
        out, = p.run()
        return out

    def _run(self, feeds):
        """Decode `feeds` ([(bytes array, start, end, flip)], at most batch_size): arrays."""
        out = self.run_batch(feeds)
        if self.device_id is None:
            return [numpy.array(out.at(i)) for i in range(len(feeds))]
        import cupy
        # DLPack on the device: no host copy; copied on the GPU because DALI
        # reuses the buffer on its next run.
        batch = cupy.from_dlpack(out.as_tensor()).copy()
        return [batch[i] for i in range(len(feeds))]

    def __call__(self, examples):
        """[(path or Sample, label, (epoch, index)) or (path, label)] -> [(x, label)]."""
        t = self.transform
        xs = [None] * len(examples)
        feeds, where = [], []
        for i, ex in enumerate(examples):
            source, label = ex[:2]
            rng = (transforms.sample_random_state(t.seed, *ex[2]) if len(ex) > 2
                   else transforms.random_state())
            try:
                data = read_bytes(source)
                width, height = header_size(data)
            except transforms.BAD_IMAGE_ERRORS as e:
                xs[i] = self._failed(source, e)
                continue
            start, end, flip = self.window(width, height, rng)
            feeds.append((numpy.frombuffer(data, numpy.uint8), start, end, flip))
            where.append(i)
        if feeds:
            try:
                decoded = self._run(feeds)
            except RuntimeError:
                # A pipeline that failed stays failed: a fresh one, then one by one.
                self.pipe = self._build()
                decoded = self._one_by_one(feeds, [examples[i][0] for i in where])
            for i, x in zip(where, decoded):
                xs[i] = x
        return [(x, numpy.int32(ex[1])) for x, ex in zip(xs, examples)]

    def _one_by_one(self, feeds, sources):
        """A batch DALI refused: each sample alone, the bad ones stood in for."""
        out = []
        for feed, source in zip(feeds, sources):
            try:
                out.append(self._run([feed])[0])
            except RuntimeError as e:
                self.pipe = self._build()
                out.append(self._failed(source, OSError('DALI cannot decode it: %s'
                                                        % _reason(e))))
        return out

    def _failed(self, source, error):
        t = self.transform
        if t.bad_images != 'error' and isinstance(error, (FileNotFoundError,
                                                          NotADirectoryError)):
            x = t._missing(source, error)
        else:
            x = t._bad(source, error)
        if self.device_id is not None:
            import cupy
            x = cupy.asarray(x)
        return x


def _reason(error):
    """The informative line of a DALI pipeline error (its first lines are boilerplate)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    if 'encountered:' in lines[:-1]:
        return lines[lines.index('encountered:') + 1].rstrip(' :')[:200]
    return lines[0][:200] if lines else type(error).__name__


class Batches:
    """A Chainer-style iterator over a dataset of (source, label[, key]) in order,
    decoded `batch_size` at a time by `Decoder` (repeat=False, no shuffle)."""

    def __init__(self, dataset, decoder, batch_size):
        self.dataset = dataset
        self.decoder = decoder
        self.batch_size = batch_size
        self.position = 0
        self.epoch = 0
        self.is_new_epoch = False

    def __iter__(self):
        return self

    def __next__(self):
        n = len(self.dataset)
        if self.position >= n:
            raise StopIteration
        stop = min(n, self.position + self.batch_size)
        examples = [self.dataset[i] for i in range(self.position, stop)]
        self.position = stop
        if stop >= n:
            self.epoch, self.is_new_epoch = 1, True
        return self.decoder(examples)

    next = __next__

    @property
    def epoch_detail(self):
        return self.position / max(1, len(self.dataset))

    def reset(self):
        self.position, self.epoch, self.is_new_epoch = 0, 0, False

    def serialize(self, serializer):
        pass

    def finalize(self):
        self.decoder = None
