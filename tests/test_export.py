"""The exported streaming step (python -m rnn_vos_jax.export, inference/exported.py), the script
that runs it without this package (docs/run_exported.py), and the convolution lowering each
exported platform gets (models/conv_lowering.py).

The script's test is the one that compiles: the tiny HS2S of the demo config at 32x64 under
both feedback rules, once in api.Segmenter and once, exported, in a process that cannot import
rnn_vos_jax. The rest only traces and lowers (for cpu, cuda and tpu, on this CPU machine), but
for one deep convolution run both ways."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from rnn_vos_jax import api, export, models
from rnn_vos_jax.data import annotations
from rnn_vos_jax.inference import exported, object_merge
from rnn_vos_jax.models import conv_lowering, layers
from rnn_vos_jax.runtime import config_files
from tests import model_testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "docs", "run_exported.py")
CONFIG = os.path.join(REPO, "configs", "hs2s.py") + ":demo"
OVERRIDES = {"model.width_divisor": 16}  # the tiny HS2S width on the demo's shallow backbone
SIZE = (32, 64)
STREAMING = [f.name for f in models.families() if f.prediction == "streaming"]


def _video(t=4, h=40, w=60, seed=0):
    """(frames uint8[t, h, w, 3], ids int[h, w] with objects 1, 2, 3): smooth moving blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    frames = np.zeros((t, h, w, 3), np.float32)
    for k in range(3):
        cy, cx, r = rng.uniform(8, h - 8), rng.uniform(8, w - 8), rng.uniform(5, 9)
        colour = rng.uniform(60, 255, 3)
        for i in range(t):
            blob = (yy - cy - 2 * i) ** 2 + (xx - cx - 3 * i) ** 2 < r**2
            frames[i][blob] = colour
    frames += rng.uniform(0, 40, frames.shape)
    ids = np.zeros((h, w), np.int64)
    ids[4:14, 5:20], ids[20:34, 30:44], ids[26:36, 6:16] = 1, 2, 3
    return frames.clip(0, 255).astype(np.uint8), ids


# Run first in the subprocess: rnn_vos_jax (and this test package) cannot be imported there,
# however it is installed (editable finder, site-packages or the working directory).
_BLOCK = """
import importlib.abc, sys

class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in ('rnn_vos_jax', 'tests'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)

sys.meta_path.insert(0, _Absent())
try:
    import rnn_vos_jax
except ModuleNotFoundError:
    pass
else:
    raise SystemExit('rnn_vos_jax is importable: ' + rnn_vos_jax.__file__)
"""


def _run_without_the_package(code, cwd):
    """Runs `code` in a Python where rnn_vos_jax cannot be imported (jax, numpy and PIL as
    installed), outside the repository, without the repository on PYTHONPATH; the
    CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-P", "-c", _BLOCK + code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


# The HS2S demo's feedback, where the 3 objects compete for pixels in one call (a 4th slot
# unused), and the default, where they run in slots of 2: a call of 2 and a call of 1.
@pytest.mark.parametrize("feedback, objects", [("exclusive", 4), ("independent", 2)])
def test_exported_step_in_a_process_without_the_package_equals_the_segmenter(
    feedback, objects, tmp_path
):
    overrides = {**OVERRIDES, "eval.feedback": feedback}
    config = config_files.load_config(CONFIG)
    config.update_from_flattened_dict(overrides)
    config.data.image_size = SIZE
    checkpoint = model_testing.save_random_checkpoint(str(tmp_path / "ckpt"), config.model)
    out = tmp_path / "exported"
    argv = ["export", f"--config={CONFIG}", f"--checkpoint={checkpoint}", f"--output={out}"]
    argv += [f"--config.{k}={v}" for k, v in overrides.items()]
    signature = export.main([*argv, f"--objects={objects}", f"--image_size={SIZE[0]},{SIZE[1]}"])
    assert (signature["feedback"], signature["objects"]) == (feedback, objects)

    frames, ids = _video()
    (tmp_path / "frames").mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / "frames" / f"{t:05d}.png")
    annotations.write(str(tmp_path / "first.png"), ids.astype(np.uint8))
    args = [
        f"--exported={out}",
        f"--frames={tmp_path / 'frames'}",
        f"--mask={tmp_path / 'first.png'}",
        f"--output={tmp_path / 'pngs'}",
        f"--probabilities={tmp_path / 'probs.npy'}",
    ]
    code = f"import runpy, sys\nsys.argv = {[SCRIPT, *args]!r}\nrunpy.run_path(sys.argv[0], run_name='__main__')"
    run = _run_without_the_package(code, str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]

    want = api.Segmenter.from_checkpoint(checkpoint, config).segment(frames, ids)
    got = np.load(tmp_path / "probs.npy")
    assert got.shape == want.shape == (4, 3, 40, 60)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert 0.05 < want[1:].std()  # not a constant: the comparison has something to compare
    for t in range(len(frames)):
        png = np.asarray(Image.open(tmp_path / "pngs" / f"{t:05d}.png"))
        merged = object_merge.merge_probabilities(want[t], [1, 2, 3])
        scores = np.sort(np.concatenate([want[t], np.full((1, 40, 60), 0.5)]), axis=0)
        clear = scores[-1] - scores[-2] > 1e-4  # pixels float rounding cannot flip
        np.testing.assert_array_equal(png[clear], merged[clear])


def _describe(entries):
    """{name: (shape, dtype)} of signature.json entries, dict leaves as 'name/leaf'."""
    out = {}
    for e in entries:
        for leaf in e.get("leaves", [e]):
            name = e["name"] if leaf is e else f"{e['name']}/{leaf['name']}"
            out[name] = (tuple(leaf["shape"]), leaf["dtype"])
    return out


@pytest.mark.parametrize("name", STREAMING)
def test_export_writes_modules_for_every_platform_variables_and_signature(name, tmp_path):
    fam = models.family(name)
    model = models.build({"name": name, **fam.tiny})
    variables = model_testing.random_variables(model)
    stream = exported.streaming(model, variables, SIZE, 2, "independent")
    signature = exported.write(
        stream, str(tmp_path), exported.PLATFORMS, {"image_size": SIZE, "feedback": "independent"}
    )
    on_disk = json.loads((tmp_path / "signature.json").read_text())
    assert on_disk["functions"] == json.loads(json.dumps(signature["functions"]))
    # The variables: plain numpy, the same arrays.
    with np.load(tmp_path / "variables.npz", allow_pickle=False) as npz:
        flat = {k: npz[k] for k in npz.files}
    from rnn_vos_jax.models import torch_keys

    want = {torch_keys.path_str(p): v for p, v in torch_keys.flatten_variables(variables).items()}
    assert sorted(flat) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(flat[key], value)
    assert _describe([signature["variables"]]) == {
        f"variables/{k}": (v.shape, str(v.dtype)) for k, v in flat.items()
    }
    carry_names = None
    for fn in ("start", "step"):
        entry = signature["functions"][fn]
        exp = jax.export.deserialize(bytearray((tmp_path / entry["file"]).read_bytes()))
        assert exp.platforms == ("cpu", "cuda", "tpu")
        # Every argument and output named with its shape and dtype, in the module's order.
        for flat_names, avals, described in (
            (entry["module_args"], exp.in_avals, _describe(entry["args"])),
            (entry["module_outputs"], exp.out_avals, _describe(entry["outputs"])),
        ):
            assert list(described) == list(dict.fromkeys(flat_names))
            assert [described[n] for n in flat_names] == [
                (tuple(a.shape), str(a.dtype)) for a in avals
            ]
        described = _describe(entry["args"])
        assert described["frame"] == ((*SIZE, 3), "uint8")
        carry = {n: s for n, s in _describe(entry["outputs"]).items() if n.startswith("carry/")}
        assert carry and all(shape[0] == 2 for shape, _ in carry.values())  # slot axis first
        assert carry_names in (None, sorted(carry))
        carry_names = sorted(carry)
    start_args = _describe(signature["functions"]["start"]["args"])
    assert start_args["masks"] == ((2, *SIZE), "float32") and start_args["live"] == ((2,), "bool")
    outputs = _describe(signature["functions"]["step"]["outputs"])
    assert outputs["probabilities"] == ((2, *SIZE), "float32")


def test_offline_family_is_refused_by_name(tmp_path):
    argv = ["export", f"--config={os.path.join(REPO, 'configs', 'bi_hs2s.py')}:demo"]
    argv += [f"--checkpoint={tmp_path / 'none'}", f"--output={tmp_path / 'out'}"]
    with pytest.raises(SystemExit, match="'bi_hs2s' predicts whole clips"):
        export.main(argv)
    assert not (tmp_path / "out").exists()


def _ops(exp):
    text = exp.mlir_module()
    return text.count("stablehlo.convolution"), text.count("stablehlo.dot_general")


def test_each_exported_platform_gets_its_own_convolution_lowering():
    """A deep convolution (3x3 over 1024 channels: 'patches' on CPU) lowered on this CPU machine:
    XLA's convolution in the tpu and cuda modules, windows and a matmul in the cpu one, both in a
    module for all three, which computes on CPU what the jitted layer computes; a function
    jitted and run here first (its CPU trace cached) is traced again for the export."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 4, 5, 1024), np.float32))
    conv = layers.Conv(8, 3)
    variables = conv.init(jax.random.key(0), x)
    fn = jax.jit(lambda v, x: conv.apply(v, x))
    assert conv_lowering.lowering((3, 3, 1024, 8)) == "patches"  # as on this machine
    want = fn(variables, x)  # traced and cached for the CPU
    assert _ops(exported.export(fn, ("cpu",), variables, x)) == (0, 1)
    for platform in ("tpu", "cuda"):
        assert _ops(exported.export(fn, (platform,), variables, x)) == (1, 0), platform
    every = exported.export(fn, exported.PLATFORMS, variables, x)
    assert _ops(every)[0] >= 1 and _ops(every)[1] >= 1
    np.testing.assert_allclose(every.call(variables, x), want, atol=1e-5)
    # Without the export's platforms, the CPU trace's lowering goes into a tpu module (the trap).
    plain = jax.export.export(fn, platforms=("tpu",))(variables, x)
    assert _ops(plain) == (0, 1)


def test_bad_platforms_flags_and_feedback_are_refused(tmp_path):
    model = models.build({"name": "s2s", **models.family("s2s").tiny})
    with pytest.raises(ValueError, match="'s2s' feeds back no mask"):
        exported.streaming(model, {}, SIZE, 2, "exclusive")
    with pytest.raises(ValueError, match="'gpu'"):
        exported.check_platforms(["cpu", "gpu"])
    assert exported.check_platforms(["TPU", "cpu", "tpu"]) == ("tpu", "cpu")
    argv = ["export", f"--config={CONFIG}", f"--checkpoint={tmp_path}", f"--output={tmp_path}"]
    with pytest.raises(SystemExit, match="--image_size=32: expected H,W"):
        export.main([*argv, "--image_size=32"])
    with pytest.raises(SystemExit, match="missing --output"):
        export.main(argv[:-1])
