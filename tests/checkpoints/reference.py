"""What the converter tests share: foreign layouts built from ours, and the peers' ResNet.

semseg and mmseg name their blocks as torchvision does (``layer1.0.conv1`` ...) and build the
deep stem as Sequential(conv, bn, relu) x 3, so one brute-force port of that ResNet reads
either file's own keys, given their prefix.
"""

import torch
import torch.nn.functional as F

# (stride, dilation) of layer1..4: output stride 8, layer3/4 dilated by 2 and 4 (semseg; mmseg's
# d8 configs, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)) ...
D8 = ((1, 1), (2, 1), (1, 2), (1, 4))
# ... and mmseg's d32 configs: strides=(1, 2, 2, 2), dilations=(1, 1, 2, 4).
D32 = ((1, 1), (2, 1), (2, 2), (2, 4))


def rename_prefixes(
    state: dict[str, torch.Tensor], prefixes: dict[str, str]
) -> dict[str, torch.Tensor]:
    """A copy of ``state``, each key's first matching prefix replaced (keys matching none kept)."""
    renamed = {}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), "")
        renamed[prefixes.get(prefix, "") + key[len(prefix) :]] = value.clone()
    return renamed


def conv(x, sd, name, stride=1, padding=0, dilation=1):
    return F.conv2d(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), stride, padding, dilation)


def bn(x, sd, name):
    stats = sd[f"{name}.running_mean"], sd[f"{name}.running_var"]
    return F.batch_norm(x, *stats, sd[f"{name}.weight"], sd[f"{name}.bias"], False, 0.0, 1e-5)


def bottleneck(x, sd, name, stride, dilation):
    out = F.relu(bn(conv(x, sd, f"{name}.conv1"), sd, f"{name}.bn1"))
    out = F.relu(bn(conv(out, sd, f"{name}.conv2", stride, dilation, dilation), sd, f"{name}.bn2"))
    out = bn(conv(out, sd, f"{name}.conv3"), sd, f"{name}.bn3")
    if f"{name}.downsample.0.weight" in sd:
        x = bn(conv(x, sd, f"{name}.downsample.0", stride), sd, f"{name}.downsample.1")
    return F.relu(out + x)


def basic_block(x, sd, name, stride, dilation):
    """mmseg's BasicBlock: conv1 takes the stride and dilation, conv2 is a plain 3x3."""
    out = F.relu(bn(conv(x, sd, f"{name}.conv1", stride, dilation, dilation), sd, f"{name}.bn1"))
    out = bn(conv(out, sd, f"{name}.conv2", 1, 1), sd, f"{name}.bn2")
    if f"{name}.downsample.0.weight" in sd:
        x = bn(conv(x, sd, f"{name}.downsample.0", stride), sd, f"{name}.downsample.1")
    return F.relu(out + x)


def plain_stem(x, sd, prefix):
    """The 7x7 conv (stride 2) ``conv1``, ``bn1``, ReLU and max-pool of torchvision's ResNet."""
    x = F.relu(bn(conv(x, sd, f"{prefix}conv1", 2, 3), sd, f"{prefix}bn1"))
    return F.max_pool2d(x, 3, 2, 1)


def deep_stem(x, sd, prefix):
    """Three 3x3 conv-bn-relu (the first stride 2) at ``prefix`` 0/1, 3/4, 6/7, then max-pool."""
    for index, stride in ((0, 2), (3, 1), (6, 1)):
        x = F.relu(bn(conv(x, sd, f"{prefix}{index}", stride, 1), sd, f"{prefix}{index + 1}"))
    return F.max_pool2d(x, 3, 2, 1)


def dilated_stages(x, sd, prefix, contract_dilation):
    """layer1..4 at output stride 8: layer3/4 keep stride 1 and dilate by 2/4."""
    return resnet_stages(x, sd, prefix, contract_dilation)[-1]


def resnet_stages(x, sd, prefix, contract_dilation, geometry=D8, block=bottleneck):
    """The outputs of layer1..4, each stage at its (stride, dilation) in ``geometry``.

    ``contract_dilation`` runs the first block of a dilated stage at half its dilation (mmseg's
    ResLayer: ``first_dilation = dilation // 2``); the stride is the first block's alone.
    """
    outputs = []
    for layer, (stride, dilation) in enumerate(geometry, start=1):
        stage = f"{prefix}layer{layer}."
        blocks = sorted({int(k[len(stage) :].split(".")[0]) for k in sd if k.startswith(stage)})
        for i in blocks:
            first = i == 0
            contract = contract_dilation and first and dilation > 1
            block_dilation = dilation // 2 if contract else dilation
            x = block(x, sd, f"{stage}{i}", stride if first else 1, block_dilation)
        outputs.append(x)
    return outputs
