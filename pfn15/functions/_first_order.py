"""Gradients computed with NumPy, wrapped so that a second-order request fails loudly.

pfn15's CPU functions compute their backward pass with NumPy directly (that is
where their speed comes from), so the gradients they return are not
differentiable. Returning them as plain Variables would make a double
backprop silently wrong; instead they come out of `FirstOrderOnly`, whose own
backward raises.
"""
import chainer
from chainer import function_node


class FirstOrderOnly(function_node.FunctionNode):
    """Outputs precomputed arrays; differentiating them raises NotImplementedError."""

    def __init__(self, arrays, what):
        self.arrays = tuple(arrays)
        self.what = what

    def forward(self, inputs):
        arrays, self.arrays = self.arrays, None
        return arrays

    def backward(self, indexes, grad_outputs):
        raise NotImplementedError(
            'pfn15.functions.%s has first-order gradients only (its backward runs in '
            'NumPy). For higher-order gradients on CPU use Chainer\'s functions: '
            'model.cpu_functions=chainer.' % self.what)


def wrap(node, indexes, grads, grad_outputs):
    """Return `grads` (one array per input of `node`, or None) for the requested
    `indexes` as Variables from one FirstOrderOnly node fed by `grad_outputs` and
    by what `node` retained: its gradients depend on those, so a second-order
    request reaches FirstOrderOnly (and raises) even where `grad_outputs` are
    constants."""
    wanted = [i for i in indexes if grads[i] is not None]
    if not wanted:
        return tuple(None for _ in indexes)
    if not chainer.config.enable_backprop:
        # A first-order backward (Chainer runs it with backprop off unless
        # enable_double_backprop): nothing will differentiate these, so no node.
        return tuple(None if grads[i] is None else chainer.Variable(grads[i], requires_grad=False)
                     for i in indexes)
    inputs = list(node.get_retained_inputs()) + list(node.get_retained_outputs())
    inputs += [g for g in grad_outputs if g is not None]
    outs = FirstOrderOnly([grads[i] for i in wanted], node.label).apply(inputs)
    by_index = dict(zip(wanted, outs))
    return tuple(by_index.get(i) for i in indexes)
