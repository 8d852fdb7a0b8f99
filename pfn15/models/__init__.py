"""Models: ResNet-50, small ResNets, and the classifier head."""
from pfn15.models.classifier import Classifier, top_k_accuracy  # noqa: F401
from pfn15.models.resnet import ResNet, resnet50, resnet_small  # noqa: F401


def cpu_choice(cfg):
    """(the CPU functions a CPU run uses, whether it computes in bf16, a one-line notice
    or None) for cfg: model.cpu_functions=onednn falls back to pfn15's own where
    oneDNN does not load; train.dtype=mixed16 on CPU is bf16 on oneDNN where the CPU
    has it, else float32."""
    from pfn15.functions import onednn
    m, t = cfg.model, cfg.train
    functions, bf16, notes = m.cpu_functions, False, []
    if t.device == 'gpu':
        return functions, False, None
    if functions == 'onednn' and not onednn.available():
        notes.append('model.cpu_functions=onednn: oneDNN does not load here (%s); '
                     "running pfn15's own CPU functions" % onednn.load_error())
        functions = 'pfn15'
    if t.dtype == 'mixed16':
        if functions != 'onednn':
            notes.append('train.dtype=mixed16 on CPU needs model.cpu_functions=onednn; '
                         'running float32')
        elif not onednn.bf16_supported():
            notes.append('train.dtype=mixed16: this CPU has no bfloat16 instructions '
                         '(AVX512_BF16 or AMX) for oneDNN; running float32')
        else:
            bf16 = True
    return functions, bf16, ' '.join(notes) or None


def build(cfg, classes, in_channels):
    """The predictor `cfg.model` names, with BN set up the way `cfg.bn` asks."""
    m = cfg.model
    # BN without moving averages: decay 0 keeps exactly the last minibatch's
    # statistics in avg_mean/avg_var; pfn15.bn all-reduces them before evaluation.
    bn_decay = cfg.bn.decay if cfg.bn.moving_average else 0.0
    functions, bf16, _ = cpu_choice(cfg)
    if m.arch == 'resnet50':
        return resnet50(classes, in_channels, m.zero_init_last_bn_gamma, bn_decay,
                        functions, bf16)
    return resnet_small(classes, in_channels, m.blocks_per_stage, m.width,
                        m.zero_init_last_bn_gamma, bn_decay, functions, bf16)
