"""Models: ResNet-50, small ResNets, and the classifier head."""
from pfn15.models.classifier import Classifier, top_k_accuracy  # noqa: F401
from pfn15.models.resnet import ResNet, resnet50, resnet_small  # noqa: F401


def build(cfg, classes, in_channels):
    """The predictor `cfg.model` names, with BN set up the way `cfg.bn` asks."""
    m = cfg.model
    # BN without moving averages: decay 0 keeps exactly the last minibatch's
    # statistics in avg_mean/avg_var; pfn15.bn all-reduces them before evaluation.
    bn_decay = cfg.bn.decay if cfg.bn.moving_average else 0.0
    if m.arch == 'resnet50':
        return resnet50(classes, in_channels, m.zero_init_last_bn_gamma, bn_decay,
                        m.cpu_functions)
    return resnet_small(classes, in_channels, m.blocks_per_stage, m.width,
                        m.zero_init_last_bn_gamma, bn_decay, m.cpu_functions)
