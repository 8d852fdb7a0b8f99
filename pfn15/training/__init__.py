"""Chainer glue for a training run: updater, extensions, checkpoints."""
