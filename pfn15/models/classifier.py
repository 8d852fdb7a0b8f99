"""The training/evaluation head: softmax cross-entropy, top-1 and top-5, reported."""
import chainer
import chainer.functions as F


def top_k_accuracy(y, t, k):
    """Fraction of rows whose true label is among the k largest scores."""
    xp = chainer.backend.get_array_module(y)
    y = y.array if isinstance(y, chainer.Variable) else y
    k = min(k, y.shape[1])
    # The true class is in the top k iff fewer than k classes score higher.
    true_score = y[xp.arange(len(t)), t][:, None]
    higher = (y > true_score).sum(axis=1)
    return xp.asarray((higher < k).mean(), dtype=y.dtype)


class Classifier(chainer.Chain):
    """Wraps a predictor; reports loss, accuracy (top-1) and top5 to the reporter.

    label_smoothing > 0 mixes the one-hot target with the uniform distribution.
    """

    def __init__(self, predictor, label_smoothing=0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        with self.init_scope():
            self.predictor = predictor

    def forward(self, x, t):
        y = self.predictor(x)
        if self.label_smoothing > 0:
            eps = self.label_smoothing
            logp = F.log_softmax(y)
            nll = -F.select_item(logp, t)
            uniform = -F.mean(logp, axis=1)
            loss = F.mean((1 - eps) * nll + eps * uniform)
        else:
            loss = F.softmax_cross_entropy(y, t)
        report = {'loss': loss, 'accuracy': F.accuracy(y, t)}
        if y.shape[1] > 5:
            report['top5'] = top_k_accuracy(y, t, 5)
        chainer.reporter.report(report, self)
        return loss
