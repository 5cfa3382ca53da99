"""PyTorch reference models in the authors' module and state-dict key layout (tests only).

Written for this project (not copied) to mirror the parameter names, channel orders and forward
semantics of the authors' HS2S `ModelMatch` and S2S++ modules, plus torchvision-layout ResNet and
VGG16, with every width divisible by `div` so tests can build tiny variants. Used as the reference
in weight-conversion and parity tests. Frames given to these models are already ImageNet-normalised
NCHW float tensors, masks are N1HW in [0, 1].
"""

import torch
from torch import nn
from torch.nn import functional as F

# ResNet and VGG16 are also re-exported for the tests (tr.ResNet, tr.VGG16).
from torchvision_reference import VGG16, VGG16_BLOCKS, ResNet  # noqa: F401

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(frames_uint8):
    """uint8[..., H, W, 3] numpy/torch -> float32[..., 3, H, W] torch, ImageNet-normalised."""
    x = torch.as_tensor(frames_uint8).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    return x.movedim(-1, -3).contiguous()


def randomize_(module, seed, scale=0.05):
    """Fills every parameter and BatchNorm buffer with seeded random values (in place).

    Weights ~ N(0, 1/sqrt(fan_in)) keep activations O(1) through deep stacks; BN running stats get
    non-trivial means and positive variances so the conversion of each buffer is exercised.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif name.endswith("weight"):  # BatchNorm scale
                p.copy_(1.0 + scale * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=gen))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(scale * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(1.0 + scale * torch.rand(b.shape, generator=gen))
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)
    return module


# --- shared authors' blocks --------------------------------------------------------------------


class ConvLSTMCell(nn.Module):
    """Authors' ConvLSTM: gates i,f,o,g from one conv over cat[x, h]; g sigmoid; h = o*relu(c)."""

    def __init__(self, input_dim, hidden_dim, kernel):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.conv = nn.Conv2d(input_dim + hidden_dim, 4 * hidden_dim, kernel, padding=kernel // 2)

    def forward(self, x, state):
        h, c = state
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], 1)), self.hidden_dim, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.sigmoid(g)
        return torch.sigmoid(o) * F.relu(c), c


class GC(nn.Module):
    """Global convolution: (kx1 -> 1xk) + (1xk -> kx1), no nonlinearity inside."""

    def __init__(self, inplanes, planes, mid, k=7):
        super().__init__()
        self.conv_l1 = nn.Conv2d(inplanes, mid, (k, 1), padding=(k // 2, 0))
        self.conv_l2 = nn.Conv2d(mid, planes, (1, k), padding=(0, k // 2))
        self.conv_r1 = nn.Conv2d(inplanes, mid, (1, k), padding=(0, k // 2))
        self.conv_r2 = nn.Conv2d(mid, planes, (k, 1), padding=(k // 2, 0))

    def forward(self, x):
        return self.conv_l2(self.conv_l1(x)) + self.conv_r2(self.conv_r1(x))


def _up(x, align_corners):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=align_corners)


# --- HS2S ---------------------------------------------------------------------------------------


class EncoderExtra(nn.Module):
    """HS2S encoder: ResNet trunk, mask conv added before bn1, extra conv, 2x2 pool, reduce."""

    def __init__(self, resnet, out_ch):
        super().__init__()
        stem = resnet.conv1.out_channels
        c32 = resnet.layer4[-1].conv3.out_channels
        self.conv1, self.bn = resnet.conv1, resnet.bn1
        self.mask_conv = nn.Conv2d(1, stem, 7, stride=2, padding=3, bias=False)
        self.added_conv = nn.Conv2d(stem, stem, 3, padding=1)
        self.added_bn = nn.BatchNorm2d(stem)
        self.conv2, self.conv3 = resnet.layer1, resnet.layer2
        self.conv4, self.conv5 = resnet.layer3, resnet.layer4
        self.reduce_channel_ = nn.Conv2d(c32, out_ch, 1)
        self.reduce_bn = nn.BatchNorm2d(out_ch)

    def forward(self, x, mask):
        s2 = F.relu(self.bn(self.conv1(x) + self.mask_conv(mask)))
        f2 = F.relu(self.added_bn(self.added_conv(s2)))
        f4 = self.conv2(F.max_pool2d(f2, 2, 2))
        f8 = self.conv3(f4)
        f16 = self.conv4(f8)
        f32 = self.conv5(f16)
        e = F.relu(self.reduce_bn(self.reduce_channel_(f32)))
        return e, f32, f16, f8, f4, f2


class DecoderRef(nn.Module):
    """HS2S decoder with GC fusion; widths are the authors' divided by `div`."""

    def __init__(self, num_ch, num_classes, div=1, feats=(64, 256, 512, 1024, 2048)):
        super().__init__()
        d = lambda c: c // div
        c2, c4, c8, c16, c32 = (d(c) for c in feats)
        half, mid = num_ch // 2, d(256)
        self.GC_p = GC(2 * num_ch, half, mid)
        self.GCGC_p = nn.Conv2d(num_ch, half, 1)
        self.GC = GC(2 * num_ch, half, mid)
        self.conv_1 = nn.Conv2d(half + c32, d(1024), 1)
        self.conv_11 = nn.Conv2d(d(1024), d(512), 5, padding=2)
        self.GCmm0 = GC(2 * num_ch, half, mid)
        self.GCmm_1 = GC(2 * num_ch, half, mid)
        self.mm = nn.Conv2d(num_ch, half, 1)
        self.conv_2_ = nn.Conv2d(d(512) + c16 + half, d(512), 1)
        self.conv_22 = nn.Conv2d(d(512), d(256), 5, padding=2)
        self.conv_3 = nn.Conv2d(d(256) + c8, d(256), 1)
        self.conv_33 = nn.Conv2d(d(256), d(128), 5, padding=2)
        self.conv_4 = nn.Conv2d(d(128) + c4, d(128), 1)
        self.conv_44 = nn.Conv2d(d(128), d(64), 5, padding=2)
        self.conv_5 = nn.Conv2d(d(64) + c2, d(64), 1)
        self.conv_55 = nn.Conv2d(d(64), d(64), 5, padding=2)
        self.distance_classifier_ = nn.Conv2d(d(64), num_classes, 3, padding=1)
        self.segmentation_branch_ = nn.Conv2d(d(64), num_classes, 3, padding=1)
        self.merge_ = nn.Conv2d(2 * num_classes, 1, 1)

    def forward(self, ref, h, skips, prev, h_sm, mid_ref):
        a = F.relu(self.GC(torch.cat([ref, h], 1)))
        b = F.relu(self.GC_p(torch.cat([prev, h], 1)))
        x = F.relu(self.GCGC_p(torch.cat([a, b], 1)))
        x = F.relu(self.conv_1(torch.cat([x, skips[0]], 1)))
        x = F.relu(self.conv_11(_up(x, False)))
        u = F.relu(self.GCmm0(torch.cat([mid_ref[0], h_sm], 1)))
        v = F.relu(self.GCmm_1(torch.cat([mid_ref[1], h_sm], 1)))
        w = F.relu(self.mm(torch.cat([u, v], 1)))
        x = F.relu(self.conv_2_(torch.cat([x, skips[1], w], 1)))
        x = F.relu(self.conv_22(_up(x, False)))
        x = F.relu(self.conv_3(torch.cat([x, skips[2]], 1)))
        x = F.relu(self.conv_33(_up(x, False)))
        x = F.relu(self.conv_4(torch.cat([x, skips[3]], 1)))
        x = F.relu(self.conv_44(_up(x, False)))
        x = F.relu(self.conv_5(torch.cat([x, skips[4]], 1)))
        x = F.relu(self.conv_55(_up(x, False)))
        dist = self.distance_classifier_(x)
        seg = self.segmentation_branch_(x)
        return self.merge_(F.relu(torch.cat([dist, seg], 1))), dist


class ModelMatch(nn.Module):
    """HS2S in the authors' key layout (encoder_ref, encoder, memory, skip_memory, decoder)."""

    def __init__(
        self, blocks=(3, 4, 6, 3), div=1, num_ch=None, num_classes=42, mem_kernel=3, sm_kernel=5
    ):
        super().__init__()
        num_ch = num_ch or 1024 // div
        self.encoder_ref = EncoderExtra(ResNet(blocks, div), num_ch)
        self.encoder = EncoderExtra(ResNet(blocks, div), num_ch)
        self.memory = ConvLSTMCell(num_ch, num_ch, mem_kernel)
        self.skip_memory = ConvLSTMCell(1024 // div, num_ch, sm_kernel)
        self.decoder = DecoderRef(num_ch, num_classes, div)

    @torch.no_grad()
    def predict(self, frames, mask):
        """Authors' test-mode loop. frames [T,N,3,H,W] normalised, mask [N,1,H,W] -> T-1 probs."""
        ref, _, m0, *_ = self.encoder_ref(frames[0], mask)
        n, _, hh, ww = frames[0].shape
        c = self.memory.hidden_dim
        h = cc = torch.zeros(n, c, hh // 32, ww // 32)
        h_sm = c_sm = torch.zeros(n, c, hh // 16, ww // 16)
        probs, prev_mask = [], mask
        for t in range(len(frames) - 1):
            prev, _, m1, *_ = self.encoder_ref(frames[t], prev_mask)
            enc = self.encoder(frames[t + 1], prev_mask)
            h, cc = self.memory(enc[0], (h, cc))
            h_sm, c_sm = self.skip_memory(enc[2], (h_sm, c_sm))
            logit, _ = self.decoder(ref, h, enc[1:], prev, h_sm, [m0, m1])
            prev_mask = torch.sigmoid(logit)
            probs.append(prev_mask[:, 0])
        return probs


def hs2s_checkpoint(model):
    """The authors' HS2S file layout: DataParallel-prefixed state dict under 'model'."""
    state = {"module." + k: v for k, v in model.state_dict().items()}
    return {"model": state, "optimizer": {"state": {}, "param_groups": []}}


# --- S2S++ --------------------------------------------------------------------------------------


class VGGUNet(nn.Module):
    """VGG16 trunk as five Sequential blocks (conv idx 0,2(,4), pool last); returns block outputs."""

    def __init__(self, in_ch=3, div=1):
        super().__init__()
        self.encoder = nn.ModuleList()
        for block in VGG16_BLOCKS:
            layers = []
            for c in block:
                layers += [nn.Conv2d(in_ch, c // div, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = c // div
            layers.append(nn.MaxPool2d(2, 2))
            self.encoder.append(nn.Sequential(*layers))

    def forward(self, x):
        feats = []
        for block in self.encoder:
            x = block(x)
            feats.append(x)
        return x, feats


class Initializer(nn.Module):
    """S2S++ initializer: 4-channel VGG, fc6 7x7 / fc7 1x1, three (h, c) state heads."""

    def __init__(self, div=1, fc=None):
        super().__init__()
        d = lambda c: c // div
        fc = fc or d(4096)
        self.vgg_backbone = VGGUNet(4, div)
        self.mid_layer = nn.Sequential(
            nn.Conv2d(d(512), fc, 7, padding=3), nn.ReLU(True), nn.Conv2d(fc, fc, 1), nn.ReLU(True)
        )
        self.h_1, self.c_1 = nn.Conv2d(fc, d(512), 1), nn.Conv2d(fc, d(512), 1)
        self.reduce_conv = nn.Conv2d(fc, d(512), 1)
        self.upsample_conv = nn.Conv2d(d(512), d(512), 3, padding=1)
        self.cat_conv = nn.Conv2d(d(1024), d(512), 1)
        self.h_2, self.c_2 = nn.Conv2d(d(512), d(512), 1), nn.Conv2d(d(512), d(512), 1)
        self.upsample_conv_2 = nn.Conv2d(d(512), d(256), 3, padding=1)
        self.cat_conv_2 = nn.Conv2d(d(512), d(256), 1)
        self.h_3, self.c_3 = nn.Conv2d(d(256), d(256), 1), nn.Conv2d(d(256), d(256), 1)

    def forward(self, x):
        x, feats = self.vgg_backbone(x)
        x = self.mid_layer(x)
        states = [(F.relu(self.h_1(x)), F.relu(self.c_1(x)))]
        x = F.relu(self.reduce_conv(x))
        x = F.relu(self.upsample_conv(_up(x, True)))
        x = F.relu(self.cat_conv(torch.cat([x, feats[-2]], 1)))
        states.append((F.relu(self.h_2(x)), F.relu(self.c_2(x))))
        x = F.relu(self.upsample_conv_2(_up(x, True)))
        x = F.relu(self.cat_conv_2(torch.cat([x, feats[-3]], 1)))
        states.append((F.relu(self.h_3(x)), F.relu(self.c_3(x))))
        return states


class EncoderVGGUnet(nn.Module):
    """S2S++ encoder: VGG16 then the 1x1 (fc*49)-channel head and a 1x1 back to 512."""

    def __init__(self, div=1, fc=None):
        super().__init__()
        fc = fc or 4096 // div
        self.vgg_backbone = VGGUNet(3, div)
        self.out = nn.Sequential(
            nn.Conv2d(512 // div, fc * 49, 1),
            nn.ReLU(True),
            nn.Conv2d(fc * 49, 512 // div, 1),
            nn.ReLU(True),
        )

    def forward(self, x):
        x, feats = self.vgg_backbone(x)
        return self.out(x), feats


class DecoderSkip(nn.Module):
    """S2S++ decoder (align_corners=True upsampling) with distance and segmentation heads."""

    def __init__(self, num_classes=42, div=1):
        super().__init__()
        d = lambda c: c // div
        self.conv_1 = nn.Conv2d(d(1024), d(512), 1)
        self.conv_11 = nn.Conv2d(d(512), d(512), 5, padding=2)
        self.conv_2 = nn.Conv2d(d(1536), d(512), 1)
        self.conv_22 = nn.Conv2d(d(512), d(256), 5, padding=2)
        self.conv_3_ = nn.Conv2d(d(768), d(256), 1)
        self.conv_33 = nn.Conv2d(d(256), d(128), 5, padding=2)
        self.conv_4 = nn.Conv2d(d(256), d(128), 1)
        self.conv_44 = nn.Conv2d(d(128), d(64), 5, padding=2)
        self.conv_5 = nn.Conv2d(d(128), d(64), 1)
        self.conv_55 = nn.Conv2d(d(64), d(64), 5, padding=2)
        self.distance_classifier_ = nn.Conv2d(d(64), num_classes, 3, padding=1)
        self.segmentation_branch_ = nn.Conv2d(d(64), num_classes, 3, padding=1)
        self.merge_ = nn.Conv2d(2 * num_classes, 1, 1)

    def forward(self, x, feats, h_middle, h_3):
        x = F.relu(self.conv_1(torch.cat([x, feats[4]], 1)))
        x = F.relu(self.conv_11(_up(x, True)))
        x = F.relu(self.conv_2(torch.cat([x, feats[3], h_middle], 1)))
        x = F.relu(self.conv_22(_up(x, True)))
        x = F.relu(self.conv_3_(torch.cat([x, feats[2], h_3], 1)))
        x = F.relu(self.conv_33(_up(x, True)))
        x = F.relu(self.conv_4(torch.cat([x, feats[1]], 1)))
        x = F.relu(self.conv_44(_up(x, True)))
        x = F.relu(self.conv_5(torch.cat([x, feats[0]], 1)))
        x = F.relu(self.conv_55(_up(x, True)))
        dist = self.distance_classifier_(x)
        seg = self.segmentation_branch_(x)
        return self.merge_(F.relu(torch.cat([dist, seg], 1))), dist


class S2SPlusPlus(nn.Module):
    """Holds the six S2S++ modules under the names of the authors' checkpoint dict."""

    def __init__(self, div=1, fc=None, num_classes=42):
        super().__init__()
        d = lambda c: c // div
        self.initializer = Initializer(div, fc)
        self.encoder = EncoderVGGUnet(div, fc)
        self.decoder = DecoderSkip(num_classes, div)
        self.convlstm = ConvLSTMCell(d(512), d(512), 3)
        self.convlstm_middle = ConvLSTMCell(d(512), d(512), 3)
        self.convlstm_3 = ConvLSTMCell(d(256), d(256), 5)

    @torch.no_grad()
    def predict(self, frames, mask):
        """Authors' submit loop. frames [T,N,3,H,W] normalised, mask [N,1,H,W] -> T-1 probs."""
        (h, c), (h_mid, c_mid), (h_3, c_3) = self.initializer(torch.cat([frames[0], mask], 1))
        probs = []
        for t in range(1, len(frames)):
            enc, feats = self.encoder(frames[t])
            h, c = self.convlstm(enc, (h, c))
            h_mid, c_mid = self.convlstm_middle(feats[3], (h_mid, c_mid))
            h_3, c_3 = self.convlstm_3(feats[2], (h_3, c_3))
            logit, _ = self.decoder(h, feats, h_mid, h_3)
            probs.append(torch.sigmoid(logit)[:, 0])
        return probs


S2SPP_MODULES = ("initializer", "encoder", "decoder", "convlstm", "convlstm_middle", "convlstm_3")


def s2spp_checkpoint(model):
    """The authors' S2S++ file layout: one state dict per module plus the optimizer."""
    ckpt = {name: getattr(model, name).state_dict() for name in S2SPP_MODULES}
    ckpt["optimizer"] = {"state": {}, "param_groups": []}
    return ckpt


def load_flax_into_torch(module, variables, prefix=""):
    """Copies Flax variables into a torch module by the converter's own key resolution.

    `prefix` is prepended to every torch key before resolving (e.g. 'encoder.' to fill a torch
    EncoderExtra from an HS2S tree). Returns the number of tensors copied; raises KeyError if a
    torch tensor has no Flax counterpart.
    """
    from rnn_vos_jax.models import torch_keys

    flat = torch_keys.flatten_variables(variables)
    index = torch_keys.KeyIndex(flat)
    copied = 0
    with torch.no_grad():
        for key, tensor in module.state_dict().items():
            if key.endswith("num_batches_tracked"):
                continue
            path = index.resolve(prefix + key, tensor.ndim)
            if path is None:
                raise KeyError(f"no Flax variable for torch key {prefix + key}")
            value = torch_keys.to_torch_layout(flat[path])
            tensor.copy_(torch.as_tensor(value.copy()))
            copied += 1
    return copied
