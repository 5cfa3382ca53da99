"""torchvision-layout ResNet-50/101, DeepLabV3-ResNet50 and VGG16 in PyTorch (tests only).

Written for this project: same module names, state-dict keys and forward semantics as
torchvision's models (ResNet v1.5 bottlenecks with `replace_stride_with_dilation`;
models/segmentation deeplabv3_resnet50: IntermediateLayerGetter `backbone`, DeepLabHead
`classifier` with ASPP, FCNHead `aux_classifier`; VGG16 features/classifier, plus the classifier
run as an FCN), with every width divided by `div` (tiny variants). Oracles for backbone
initialisation and the authors' backbones.
"""

import torch
from torch import nn
from torch.nn import functional as F

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class Bottleneck(nn.Module):
    """torchvision ResNet v1.5 bottleneck (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


class ResNet(nn.Module):
    """torchvision ResNet-50/101 key layout; `blocks`=(3,4,6,3) is ResNet-50, (3,4,23,3) R-101.

    `replace_stride_with_dilation` (layer2..layer4) as torchvision's `_make_layer(dilate=...)`:
    the stage's stride becomes dilation, its first block keeps the previous dilation.
    """

    def __init__(
        self,
        blocks=(3, 4, 6, 3),
        div=1,
        num_classes=1000,
        replace_stride_with_dilation=(False, False, False),
    ):
        super().__init__()
        stem = 64 // div
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, dilation = stem, 1
        for i, n in enumerate(blocks):
            planes = (64 << i) // div
            stride, previous = (1 if i == 0 else 2), dilation
            if i > 0 and replace_stride_with_dilation[i - 1]:
                dilation, stride = dilation * stride, 1
            layer = [Bottleneck(inplanes, planes, stride=stride, dilation=previous)]
            inplanes = planes * 4
            layer += [Bottleneck(inplanes, planes, dilation=dilation) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def features(self, x):
        """Returns [stem (s2, after bn1+relu), layer1..layer4 outputs]."""
        s2 = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(s2)
        outs = [s2]
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return outs


class VGG16(nn.Module):
    """torchvision VGG16 key layout: features.{0,2,5,...,28}, classifier.{0,3,6}."""

    def __init__(self, div=1, fc=4096, num_classes=1000):
        super().__init__()
        layers, cin = [], 3
        for block in VGG16_BLOCKS:
            for c in block:
                layers += [nn.Conv2d(cin, c // div, 3, padding=1), nn.ReLU(inplace=True)]
                cin = c // div
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(cin * 49, fc),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(fc, fc),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(fc, num_classes),
        )

    def fcn(self, x):
        """The classifier's fc6 / fc7 run as convs on the features' output [N, C, h, w] (an FCN):
        classifier.0 viewed as a 7x7 conv (pad 3), classifier.3 as a 1x1 conv, each + ReLU."""
        fc6, fc7 = self.classifier[0], self.classifier[3]
        c = fc6.in_features // 49
        x = F.relu(F.conv2d(x, fc6.weight.view(fc6.out_features, c, 7, 7), fc6.bias, padding=3))
        return F.relu(F.conv2d(x, fc7.weight.view(fc7.out_features, -1, 1, 1), fc7.bias))


# --- torchvision.models.segmentation.deeplabv3 -------------------------------------------------


class ASPPConv(nn.Sequential):
    def __init__(self, cin, cout, rate):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=rate, dilation=rate, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(),
        )  # fmt: skip

    def forward(self, x):
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """torchvision ASPP: convs.0 (1x1), convs.1..3 (ASPPConv), convs.4 (ASPPPooling), project."""

    def __init__(self, cin, rates, cout=256):
        super().__init__()
        modules = [
            nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
        ]
        modules += [ASPPConv(cin, cout, r) for r in rates]
        modules.append(ASPPPooling(cin, cout))
        self.convs = nn.ModuleList(modules)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * cout, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Dropout(0.5),
        )

    def forward(self, x):
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class _Backbone(nn.Module):
    """IntermediateLayerGetter over a ResNet: its children up to layer4 (no avgpool / fc)."""

    def __init__(self, resnet):
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(resnet, name))

    def forward(self, x):
        for mod in self.children():
            x = mod(x)
        return x


class DeepLabV3(nn.Module):
    """deeplabv3_resnet50(aux_loss=True) key layout: backbone.*, classifier.*, aux_classifier.*.

    `rates` are the ASPP's (torchvision: 12, 24, 36 at its output stride 8); `dilate` is the
    backbone's replace_stride_with_dilation (torchvision: (False, True, True)).
    """

    def __init__(
        self, blocks=(3, 4, 6, 3), div=1, num_classes=21, rates=(12, 24, 36), dilate=(0, 1, 1)
    ):
        super().__init__()
        resnet = ResNet(blocks, div, replace_stride_with_dilation=tuple(map(bool, dilate)))
        self.backbone = _Backbone(resnet)
        c32, c16, w = 2048 // div, 1024 // div, 256 // div
        self.classifier = nn.Sequential(
            ASPP(c32, rates, w), nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
            nn.ReLU(), nn.Conv2d(w, num_classes, 1),
        )  # fmt: skip
        self.aux_classifier = nn.Sequential(
            nn.Conv2d(c16, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Dropout(0.1), nn.Conv2d(w, num_classes, 1),
        )  # fmt: skip
