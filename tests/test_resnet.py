"""ResNet backbone / HS2S encoder: torch key layout, counts, shapes, parity with a torch replica."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_vos_jax.models import backbones
from rnn_vos_jax.models.hs2s_encoder import HS2SEncoder

LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def torch_keys(variables) -> dict[str, tuple[int, ...]]:
    """The documented flax -> torch naming rule: join module names with '.', rename the leaf."""
    out = {}
    for col in ("params", "batch_stats"):
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables[col]):
            names = [p.key for p in path]
            key = ".".join(names[:-1] + [LEAF_TO_TORCH[(col, names[-1])]])
            out[key] = tuple(leaf.shape)
    return out


def expected_torchvision_keys(depths, stage_names, stem_bn="bn1") -> set[str]:
    """torchvision ResNet state-dict keys (no fc, no num_batches_tracked), from its layout."""
    bn = ("weight", "bias", "running_mean", "running_var")
    keys = {"conv1.weight"} | {f"{stem_bn}.{b}" for b in bn}
    for stage, depth in zip(stage_names, depths):
        for i in range(depth):
            for j in (1, 2, 3):
                keys.add(f"{stage}.{i}.conv{j}.weight")
                keys |= {f"{stage}.{i}.bn{j}.{b}" for b in bn}
        keys.add(f"{stage}.0.downsample.0.weight")
        keys |= {f"{stage}.0.downsample.1.{b}" for b in bn}
    return keys


def _shapes(module, *inputs):
    return jax.eval_shape(lambda *a: module.init(jax.random.key(0), *a), *inputs)


@pytest.mark.parametrize(
    "backbone,depths,count",
    [("resnet50", (3, 4, 6, 3), 23_508_032), ("resnet101", (3, 4, 23, 3), 42_500_160)],
)
def test_backbone_maps_onto_exactly_torchvision_keys(backbone, depths, count):
    net = backbones.build(backbone)
    x = jnp.zeros((1, 64, 64, 3))
    shapes = _shapes(net, x)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
    keys = {k: v.shape for k, v in backbones.torchvision_state(zeros, backbone).items()}
    assert set(keys) == expected_torchvision_keys(depths, [f"layer{i}" for i in (1, 2, 3, 4)])
    # torchvision's resnet parameter count minus fc (2048 * 1000 + 1000).
    n = sum(np.prod(s) for k, s in keys.items() if not k.endswith(("running_mean", "running_var")))
    assert n == count
    assert keys["layer1.0.conv2.weight"] == (64, 64, 3, 3)
    assert keys["layer2.0.downsample.0.weight"] == (512, 256, 1, 1)
    # Besides the torchvision trunk, only the authors' added stem layers.
    assert set(shapes["params"]) - {"conv1", "bn", "conv2", "conv3", "conv4", "conv5"} == {
        "added_conv",
        "added_bn",
    }


def test_encoder_extra_layout_count_and_shapes():
    x = jax.ShapeDtypeStruct((1, 256, 448, 3), jnp.float32)
    m = jax.ShapeDtypeStruct((1, 256, 448, 1), jnp.float32)
    enc = HS2SEncoder("resnet50")
    out, variables = jax.eval_shape(
        lambda a, b: enc.init_with_output(jax.random.key(0), a, b), x, m
    )
    keys = torch_keys(variables)
    stages = ["conv2", "conv3", "conv4", "conv5"]
    extra = {"mask_conv.weight", "added_conv.weight", "added_conv.bias", "reduce_channel_.weight"}
    extra |= {"reduce_channel_.bias"}
    for bn in ("added_bn", "reduce_bn"):
        extra |= {f"{bn}.{b}" for b in ("weight", "bias", "running_mean", "running_var")}
    assert set(keys) == expected_torchvision_keys((3, 4, 6, 3), stages, stem_bn="bn") | extra
    params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert params == 25_648_448
    assert keys["mask_conv.weight"] == (7, 7, 1, 64)
    assert keys["reduce_channel_.weight"] == (1, 1, 2048, 1024)
    shapes = {k: v.shape for k, v in out.items()}
    assert shapes == {
        "e": (1, 8, 14, 1024),
        "f32": (1, 8, 14, 2048),
        "f16": (1, 16, 28, 1024),
        "f8": (1, 32, 56, 512),
        "f4": (1, 64, 112, 256),
        "f2": (1, 128, 224, 64),
    }
    r101 = _shapes(HS2SEncoder("resnet101"), x, m)
    assert sum(x.size for x in jax.tree.leaves(r101["params"])) == 44_640_576
    channels = backbones.build("resnet50", width_divisor=16).channels()
    assert channels == {"f2": 4, "f4": 16, "f8": 32, "f16": 64, "f32": 128}
    with pytest.raises(ValueError, match="4 positive stage depths"):
        _shapes(HS2SEncoder(blocks=(1, 1)), x, m)


# ----------------------------------------------------------------------------------------------
# Parity with a torch replica (written from torchvision's and the HS2S paper's layout).


def _torch_encoder(width: int, depths):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    F = torch.nn.functional

    class Bottleneck(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = None
            if stride != 1 or cin != planes * 4:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
                )

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return F.relu(y + (x if self.downsample is None else self.downsample(x)))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            stem = 64 // width
            self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
            names = ["conv2", "conv3", "conv4", "conv5"]
            self.bn = nn.BatchNorm2d(stem)
            self.mask_conv = nn.Conv2d(1, stem, 7, 2, 3, bias=False)
            self.added_conv = nn.Conv2d(stem, stem, 3, padding=1)
            self.added_bn = nn.BatchNorm2d(stem)
            self.reduce_channel_ = nn.Conv2d(2048 // width, 1024 // width, 1)
            self.reduce_bn = nn.BatchNorm2d(1024 // width)
            cin = stem
            for k, (name, depth) in enumerate(zip(names, depths)):
                planes = (64 << k) // width
                stride = 1 if k == 0 else 2
                blocks = [Bottleneck(cin, planes, stride)]
                blocks += [Bottleneck(planes * 4, planes, 1) for _ in range(1, depth)]
                setattr(self, name, nn.Sequential(*blocks))
                cin = planes * 4
            self.names = names

        def forward(self, x, mask):
            feats = {}
            x = F.relu(self.bn(self.conv1(x) + self.mask_conv(mask)))
            x = feats["f2"] = F.relu(self.added_bn(self.added_conv(x)))
            x = F.max_pool2d(x, 2, 2)
            for name, f in zip(self.names, ("f4", "f8", "f16", "f32")):
                x = feats[f] = getattr(self, name)(x)
            feats["e"] = F.relu(self.reduce_bn(self.reduce_channel_(x)))
            return feats

    torch.manual_seed(0)
    model = Encoder()
    with torch.no_grad():  # non-trivial BN state so eval mode is a real test
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
            elif isinstance(mod, nn.Conv2d) and mod.bias is not None:
                mod.bias.uniform_(-0.1, 0.1)
    return torch, model


def _to_flax(state_dict, template):
    """Fill a flax variable tree from a torch state dict via the documented naming rule."""
    sd = {k: v.detach().numpy() for k, v in state_dict.items()}

    def pick(col):
        def fill(path, leaf):
            names = [p.key for p in path]
            v = sd[".".join(names[:-1] + [LEAF_TO_TORCH[(col, names[-1])]])]
            v = v.transpose(2, 3, 1, 0) if v.ndim == 4 else v
            assert v.shape == leaf.shape, (names, v.shape, leaf.shape)
            return jnp.asarray(v)

        return jax.tree_util.tree_map_with_path(fill, template[col])

    return {"params": pick("params"), "batch_stats": pick("batch_stats")}


def test_parity_with_torch_eval_and_train_mode():
    width, depths, blocks = 8, (1, 2, 1, 1), (1, 2, 1, 1)
    torch, tmodel = _torch_encoder(width, depths)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 64, 96, 3)).astype(np.float32)
    m = (rng.random((2, 64, 96, 1)) > 0.5).astype(np.float32)
    fmodel = HS2SEncoder(blocks=blocks, width_divisor=width)
    inputs = (x, m)
    variables = _to_flax(tmodel.state_dict(), _shapes(fmodel, *inputs))
    t_in = [torch.from_numpy(a.transpose(0, 3, 1, 2)) for a in inputs]

    def run(train):
        return jax.jit(lambda v, *a: fmodel.apply(v, *a, train, mutable=["batch_stats"]))(
            variables, *inputs
        )

    for train in (False, True):
        tmodel.train(train)
        with torch.no_grad():
            expect = {k: v.numpy().transpose(0, 2, 3, 1) for k, v in tmodel(*t_in).items()}
        out, upd = run(train)
        assert set(out) == set(expect)
        for k, want in expect.items():
            np.testing.assert_allclose(out[k], want, atol=2e-4, rtol=1e-4, err_msg=k)
        # Running statistics: unchanged in eval mode, torch's momentum/unbiased update in train.
        new = _to_flax(tmodel.state_dict(), _shapes(fmodel, *inputs))["batch_stats"]
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
            upd["batch_stats"],
            new,
        )
        changed = jax.tree.map(
            lambda a, b: bool(np.any(a != b)), upd["batch_stats"], variables["batch_stats"]
        )
        assert all(jax.tree.leaves(changed)) == train
