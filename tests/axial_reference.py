"""axialnet-layout Axial-DeepLab in PyTorch (tests only), an oracle for models/backbones/axial.py.

Written for this project from the semantics of github.com/csrhddlam/axial-deeplab's
lib/models/axialnet.py (AxialAttention, AxialBlock, AxialAttentionNet): the same module names,
state-dict keys (conv1, bn1, layerK.i.{conv_down, bn1, hight_block, width_block, conv_up, bn2,
downsample.0/1}, fc; each attention layer's qkv_transform (Conv1d), bn_qkv / bn_output
(BatchNorm1d), bn_similarity (BatchNorm2d), relative, flatten_index) and forward computation, in
NCHW. Two generalisations for the tests: per-axis spans (axialnet has one square span per block)
and a minimum attention width (backbone tiny variants); `hs2s_features` runs the trunk behind
the HS2S stem (mask conv, added conv/BN, 2x2 max-pool) as the JAX backbone does.
"""

import torch
from torch import nn
from torch.nn import functional as F


class AxialAttention(nn.Module):
    """Attention along one axis of NCHW maps ('height': within each column), `span` long."""

    def __init__(self, cin, width, heads=8, span=8, stride=1, along_width=False):
        super().__init__()
        self.heads, self.gp, self.span = heads, width // heads, span
        self.width, self.stride, self.along_width = width, stride, along_width
        self.qkv_transform = nn.Conv1d(cin, 2 * width, 1, bias=False)
        self.bn_qkv = nn.BatchNorm1d(2 * width)
        self.bn_similarity = nn.BatchNorm2d(3 * heads)
        self.bn_output = nn.BatchNorm1d(2 * width)
        self.relative = nn.Parameter(torch.randn(2 * self.gp, 2 * span - 1))
        pos = torch.arange(span)
        # index[i, j] = i - j + span - 1: query i, key j.
        self.register_buffer("flatten_index", (pos[:, None] - pos[None, :] + span - 1).reshape(-1))

    def forward(self, x):
        n, c, h, w = x.shape
        # Lines along the attended axis: [n * other, c, length].
        if self.along_width:
            lines = x.permute(0, 2, 1, 3).reshape(n * h, c, w)
        else:
            lines = x.permute(0, 3, 1, 2).reshape(n * w, c, h)
        b, _, length = lines.shape
        assert length == self.span, (length, self.span)
        g, gp = self.heads, self.gp
        qkv = self.bn_qkv(self.qkv_transform(lines)).reshape(b, g, 2 * gp, length)
        q, k, v = qkv[:, :, : gp // 2], qkv[:, :, gp // 2 : gp], qkv[:, :, gp:]
        emb = self.relative[:, self.flatten_index].reshape(2 * gp, length, length)
        q_emb, k_emb, v_emb = emb[: gp // 2], emb[gp // 2 : gp], emb[gp:]
        qk = torch.einsum("bgci,bgcj->bgij", q, k)
        qr = torch.einsum("bgci,cij->bgij", q, q_emb)
        kr = torch.einsum("bgcj,cji->bgij", k, k_emb)  # key j at offset j - i
        sim = self.bn_similarity(torch.cat([qk, qr, kr], 1))
        attn = F.softmax(sim.reshape(b, 3, g, length, length).sum(1), dim=3)
        sv = torch.einsum("bgij,bgcj->bgci", attn, v)
        sve = torch.einsum("bgij,cij->bgci", attn, v_emb)
        # Channel 2 * (g * gp + c) + t, t = 0 for sv and 1 for sve (axialnet's cat + view).
        out = torch.stack([sv, sve], 3).reshape(b, 2 * self.width, length)
        out = self.bn_output(out).reshape(b, self.width, 2, length).sum(2)
        if self.along_width:
            out = out.reshape(n, h, self.width, w).permute(0, 2, 1, 3)
        else:
            out = out.reshape(n, w, self.width, h).permute(0, 2, 3, 1)
        if self.stride > 1:
            out = F.avg_pool2d(out, self.stride, self.stride)
        return out


class AxialBlock(nn.Module):
    expansion = 2

    def __init__(self, cin, planes, width, spans, stride=1):
        super().__init__()
        self.conv_down = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.hight_block = AxialAttention(width, width, span=spans[0])
        self.width_block = AxialAttention(
            width, width, span=spans[1], stride=stride, along_width=True
        )
        self.conv_up = nn.Conv2d(width, planes * 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes * 2)
        self.downsample = None
        if stride != 1 or cin != planes * 2:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes * 2, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 2),
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv_down(x)))
        y = F.relu(self.width_block(self.hight_block(y)))
        y = self.bn2(self.conv_up(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class AxialNet(nn.Module):
    """AxialAttentionNet key layout. `s` scales the widths as axialnet's (0.5 = the S models),
    `spans` is the (height, width) of layer1's input (axialnet: (56, 56)); the first block of
    layer2..4 attends at the previous stage's size, as axialnet's kernel_size schedule.
    `min_width` floors the attention widths (the JAX backbone's tiny variants)."""

    def __init__(self, depths=(3, 4, 6, 3), s=0.5, spans=(56, 56), num_classes=1000, min_width=1):
        super().__init__()
        stem = int(64 * s)
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin, (h, w) = stem, spans
        for k, depth in enumerate(depths):
            planes = int((128 << k) * s)
            width = max(planes, min_width)
            stride = 1 if k == 0 else 2
            blocks = [AxialBlock(cin, planes, width, (h, w), stride)]
            h, w, cin = h // stride, w // stride, planes * 2
            blocks += [AxialBlock(cin, planes, width, (h, w)) for _ in range(1, depth)]
            setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for k in range(1, 5):
            x = getattr(self, f"layer{k}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def hs2s_features(net, stem, x, mask=None):
    """The pyramid of the JAX backbone from an AxialNet's trunk: [f2, f4, f8, f16, f32].

    `stem` holds the HS2S layers (mask_conv, added_conv, added_bn as torch modules); x NCHW.
    """
    y = net.conv1(x)
    if mask is not None:
        y = y + stem["mask_conv"](mask)
    y = F.relu(net.bn1(y))
    f2 = F.relu(stem["added_bn"](stem["added_conv"](y)))
    outs, y = [f2], F.max_pool2d(f2, 2, 2)
    for k in range(1, 5):
        y = getattr(net, f"layer{k}")(y)
        outs.append(y)
    return outs
