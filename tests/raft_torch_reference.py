"""PyTorch reference of RAFT's update block, correlation lookup and convex upsampling (tests only).

Written for this project from the semantics of princeton-vl/RAFT (core/update.py, corr.py,
raft.py), with its module names and state-dict keys, NCHW like RAFT, so the Flax port can be
checked against torch's own conv, grid_sample and unfold. Widths are RAFT's.
"""

import torch
from torch import nn
from torch.nn import functional as F


class MotionEncoder(nn.Module):
    def __init__(self, corr_planes):
        super().__init__()
        self.convc1 = nn.Conv2d(corr_planes, 256, 1, padding=0)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(256, 126, 3, padding=1)

    def forward(self, flow, corr):
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([cor, flo], 1))), flow], 1)


class SepConvGRU(nn.Module):
    def __init__(self, hidden=128, inputs=256):
        super().__init__()
        for s, k, p in (("1", (1, 5), (0, 2)), ("2", (5, 1), (2, 0))):
            for g in "zrq":
                setattr(self, f"conv{g}{s}", nn.Conv2d(hidden + inputs, hidden, k, padding=p))

    def forward(self, h, x):
        for s in "12":
            hx = torch.cat([h, x], 1)
            z = torch.sigmoid(getattr(self, f"convz{s}")(hx))
            r = torch.sigmoid(getattr(self, f"convr{s}")(hx))
            q = torch.tanh(getattr(self, f"convq{s}")(torch.cat([r * h, x], 1)))
            h = (1 - z) * h + z * q
        return h


class FlowHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(128, 256, 3, padding=1)
        self.conv2 = nn.Conv2d(256, 2, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


class BasicUpdateBlock(nn.Module):
    def __init__(self, corr_planes=4 * 81):
        super().__init__()
        self.encoder = MotionEncoder(corr_planes)
        self.gru = SepConvGRU()
        self.flow_head = FlowHead()
        self.mask = nn.Sequential(
            nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 576, 1, padding=0)
        )

    def forward(self, net, inp, corr, flow):
        net = self.gru(net, torch.cat([inp, self.encoder(flow, corr)], 1))
        return net, 0.25 * self.mask(net), self.flow_head(net)


def corr_lookup(fmap1, fmap2, coords, levels, radius):
    """RAFT's CorrBlock on NCHW fmaps and coords [N, 2, h, w] -> [N, L*(2r+1)^2, h, w]."""
    n, c, h, w = fmap1.shape
    corr = torch.matmul(fmap1.reshape(n, c, h * w).transpose(1, 2), fmap2.reshape(n, c, h * w))
    corr = (corr / c**0.5).reshape(n * h * w, 1, h, w)
    pyramid = [corr]
    for _ in range(levels - 1):
        pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))
    xy = coords.permute(0, 2, 3, 1).reshape(n * h * w, 1, 1, 2)
    d = torch.linspace(-radius, radius, 2 * radius + 1)
    delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1)  # (dy, dx) as RAFT
    out = []
    for lvl, cl in enumerate(pyramid):
        pts = xy / 2**lvl + delta.view(1, 2 * radius + 1, 2 * radius + 1, 2)
        hl, wl = cl.shape[-2:]
        grid = torch.stack([2 * pts[..., 0] / (wl - 1) - 1, 2 * pts[..., 1] / (hl - 1) - 1], -1)
        s = F.grid_sample(cl, grid, align_corners=True)  # zeros padding
        out.append(s.view(n, h, w, -1))
    return torch.cat(out, -1).permute(0, 3, 1, 2)


def convex_upsample(flow, mask):
    """RAFT's upsample_flow: flow [N, 2, h, w], mask [N, 576, h, w] -> [N, 2, 8h, 8w]."""
    n, _, h, w = flow.shape
    m = torch.softmax(mask.view(n, 1, 9, 8, 8, h, w), dim=2)
    up = F.unfold(8 * flow, [3, 3], padding=1).view(n, 2, 9, 1, 1, h, w)
    up = torch.sum(m * up, dim=2).permute(0, 1, 4, 2, 5, 3)
    return up.reshape(n, 2, 8 * h, 8 * w)
