"""torchvision-layout ResNet-50/101 and VGG16 in PyTorch (tests only), tiny-width capable.

Written for this project: same module names, state-dict keys and forward semantics as
torchvision's models (ResNet v1.5 bottlenecks; VGG16 features/classifier), with every width
divided by `div`. Oracles for backbone initialisation and the authors' backbones.
"""

from torch import nn

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class Bottleneck(nn.Module):
    """torchvision ResNet v1.5 bottleneck (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
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
    """torchvision ResNet-50/101 key layout; `blocks`=(3,4,6,3) is ResNet-50, (3,4,23,3) R-101."""

    def __init__(self, blocks=(3, 4, 6, 3), div=1, num_classes=1000):
        super().__init__()
        stem = 64 // div
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = stem
        for i, n in enumerate(blocks):
            planes = (64 << i) // div
            layer = []
            for j in range(n):
                layer.append(Bottleneck(inplanes, planes, stride=2 if (i > 0 and j == 0) else 1))
                inplanes = planes * 4
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
