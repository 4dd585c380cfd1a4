"""ResNet-18 convolutional trunk in plain torch, laid out like torchvision's.

torchvision is not importable beside the CPU torch build, yet both Diffusion Policy (through robomimic)
and LeRobot publish image encoders built from ``torchvision.models.resnet18`` with its ``avgpool`` and
``fc`` dropped: ``nn.Sequential(*list(resnet18().children())[:-2])``. :func:`resnet18_trunk` returns
exactly that Sequential, so a published trunk state_dict (``0.weight``, ``1.weight``,
``4.0.conv1.weight``, ``5.0.downsample.0.weight``, ...) loads into it with only its prefix stripped
(robomimic's ``nets.``, LeRobot's ``backbone.``). Inside the stages the keys are torchvision's own
(``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample.0/1``); :func:`torchvision_to_trunk_key` maps a
full torchvision key (``layer1.0.conv1.weight``) onto the trunk's.

Both Diffusion Policy's image policies and LeRobot's diffusion policy replace every BatchNorm2d by
``GroupNorm(num_features // 16, num_features)``; ``group_norm=True`` builds that variant directly.
"""

from __future__ import annotations

from torch import nn

#: torchvision's child names, in the order of the trunk's Sequential indices
TRUNK_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
#: channels of the trunk's output feature map
RESNET18_OUT_CHANNELS = 512
#: GroupNorm's features per group in Diffusion Policy's / LeRobot's BatchNorm replacement
GN_FEATURES_PER_GROUP = 16


def _norm(channels: int, group_norm: bool) -> nn.Module:
    if group_norm:
        return nn.GroupNorm(channels // GN_FEATURES_PER_GROUP, channels)
    return nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convs with a residual (1x1 conv + norm when shapes change)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, group_norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(out_ch, group_norm)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(out_ch, group_norm)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), _norm(out_ch, group_norm)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _stage(in_ch: int, out_ch: int, stride: int, group_norm: bool) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_ch, out_ch, stride, group_norm), BasicBlock(out_ch, out_ch, 1, group_norm))


def resnet18_trunk(group_norm: bool = False, in_channels: int = 3) -> nn.Sequential:
    """ResNet-18 without avgpool/fc: (B, in_channels, H, W) -> (B, 512, ceil(H/32), ceil(W/32)).

    Index i of the returned Sequential is torchvision's child ``TRUNK_CHILDREN[i]``; ``group_norm=True``
    uses GroupNorm(C // 16, C) wherever torchvision has BatchNorm2d (Diffusion Policy / LeRobot).
    Weights are randomly initialised; load a published state_dict on top.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
        _norm(64, group_norm),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        _stage(64, 64, 1, group_norm),
        _stage(64, 128, 2, group_norm),
        _stage(128, 256, 2, group_norm),
        _stage(256, 512, 2, group_norm),
    )


def torchvision_to_trunk_key(key: str) -> str:
    """Map a torchvision resnet18 key (``layer2.0.downsample.0.weight``) onto the trunk's (``5.0.downsample.0.weight``).

    Raises KeyError for keys that are not part of the trunk (``fc.*``)."""
    head, _, rest = key.partition(".")
    if head not in TRUNK_CHILDREN:
        raise KeyError(f"{key!r} is not a ResNet-18 trunk parameter (trunk children: {', '.join(TRUNK_CHILDREN)})")
    return f"{TRUNK_CHILDREN.index(head)}.{rest}"
