"""The streaming step shipped compiled: a family's start and step as serialized `jax.export`
modules, its variables as a plain .npz and a `signature.json` (the export command,
rnn_vos_jax/export.py; docs/run_exported.py runs them with only jax and numpy installed).

What is exported is what StreamingPredictor and its Tracker run (tracker._compiled), for K
object slots at the model's input size (H, W), variables as arguments:

  start(variables, frame uint8[H, W, 3], masks float32[K, H, W], live bool[K]) -> carry
  step(variables, carry, frame uint8[H, W, 3]) -> (carry, probabilities float32[K, H, W])

`variables` and `carry` are flat dicts of arrays ('params/backbone/conv1/kernel', 'memory/0'),
so the .npz loads straight into the first argument and the carry goes from one call to the next
as it comes. Every carry leaf has the object slot as its leading axis. Frames are resized to
(H, W) as the predictor does (PIL bilinear), masks with nearest neighbour (0/1; all zeros in an
unused slot, whose `live` is False: it keeps an empty carry and competes for no pixel, as the
predictor's padding slots do); the probabilities are the sigmoid of the model's logits at
(H, W), which the predictor resizes bilinearly back to the frame size (jax.image.resize) and
clips to [0, 1].

`export` is the one way this project lowers for other platforms: it traces under
models.conv_lowering.for_platforms, so a module lowered on a CPU machine for 'tpu' or 'cuda'
gets XLA's convolutions, not the CPU's (tests/test_export_training.py checks the training step
of every family that way).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.inference import predictors, tracker
from rnn_vos_jax.inference.object_merge import check_feedback, exclusive_masks
from rnn_vos_jax.models import conv_lowering
from rnn_vos_jax.runtime import atomic, storage

PLATFORMS = ("cpu", "cuda", "tpu")  # the export command's default
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # jax.export's names
FILES = {
    "start": "start.jax_export",
    "step": "step.jax_export",
    "variables": "variables.npz",
    "signature": "signature.json",
}
LIVE = "exclusive/live"  # the carry's extra leaf under config.eval.feedback='exclusive'
FORMAT = "rnn-vos-jax exported streaming step, version 1"


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
    """The platforms as jax.export names them, in order, without repeats; ValueError otherwise."""
    out = tuple(dict.fromkeys(str(p).strip().lower() for p in platforms if str(p).strip()))
    bad = [p for p in out if p not in KNOWN_PLATFORMS]
    if bad or not out:
        raise ValueError(f"platforms {list(platforms)}: expected some of {KNOWN_PLATFORMS}")
    return out


def export(fn: Callable, platforms: Sequence[str], *args: Any) -> jax.export.Exported:
    """`fn` (jitted or not; its shardings come with it) exported for `platforms`, traced for
    them (each platform's convolution lowering: models/conv_lowering.py) on `args` (arrays or
    ShapeDtypeStructs)."""
    platforms = check_platforms(platforms)
    fn = fn if hasattr(fn, "trace") else jax.jit(fn)
    with conv_lowering.for_platforms(platforms):
        return jax.export.export(fn, platforms=platforms)(*args)


def _name(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)


def flatten(tree: Any) -> tuple[dict[str, Any], Callable[[Mapping[str, Any]], Any]]:
    """({'a/0': leaf, ...}, unflatten) of a pytree: its leaves by '/'-joined path."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [_name(p) for p, _ in leaves]
    if len(set(names)) != len(names):
        raise ValueError(f"leaf names are not unique: {names}")
    flat = {n: x for n, (_, x) in zip(names, leaves)}
    return flat, lambda d: jax.tree.unflatten(treedef, [d[n] for n in names])


@dataclasses.dataclass(frozen=True)
class Streaming:
    """A streaming model's start and step as exportable functions of flat dicts (module doc).

    Attributes:
      start, step: the functions; variables: the flat variables (numpy); example: ShapeDtypeStructs
        of (variables, frame, masks, live); carry: of the flat carry.
    """

    start: Callable
    step: Callable
    variables: dict[str, np.ndarray]
    example: tuple
    carry: dict[str, jax.ShapeDtypeStruct]


def streaming_family(model) -> models.Family:
    """The model's family; ValueError naming it if it predicts whole clips (offline)."""
    fam = models.family_of(model)
    if fam.prediction != "streaming":
        raise ValueError(
            f"model family {fam.name!r} predicts whole clips (offline, prediction="
            f"{fam.prediction!r}): it has no streaming step to export"
        )
    return fam


def streaming(
    model, variables: Mapping[str, Any], image_size: Sequence[int], objects: int, feedback: str
) -> Streaming:
    """The exportable start and step of `model` for `objects` slots at `image_size` (H, W).

    Raises:
      ValueError: a family that predicts whole clips (offline), a bad slot count or feedback
        ('exclusive' for a family that feeds back no mask).
    """
    fam = streaming_family(model)
    check_feedback(feedback)
    exclusive = feedback == "exclusive"
    if exclusive and fam.fed_back_mask is None:  # as StreamingPredictor refuses it
        raise ValueError(
            f"feedback='exclusive': model family {fam.name!r} feeds back no mask "
            "(Family.fed_back_mask); use 'independent'"
        )
    if objects < 1:
        raise ValueError(f"objects={objects}: need at least one object slot")
    flat_vars, unflatten_vars = flatten({k: v for k, v in variables.items() if v})
    flat_vars = {n: np.asarray(v) for n, v in flat_vars.items()}
    init, step, empty_carry = tracker._compiled(model)
    h, w = (int(s) for s in image_size)
    example = (
        {n: jax.ShapeDtypeStruct(v.shape, v.dtype) for n, v in flat_vars.items()},
        jax.ShapeDtypeStruct((h, w, 3), jnp.uint8),
        jax.ShapeDtypeStruct((objects, h, w), jnp.float32),
        jax.ShapeDtypeStruct((objects,), jnp.bool_),
    )
    shapes = tracker.carry_shapes(model, unflatten_vars(example[0]), (h, w), objects)
    carry_shapes, unflatten_carry = flatten(shapes)
    if exclusive:
        carry_shapes[LIVE] = jax.ShapeDtypeStruct((objects,), jnp.bool_)

    def exclude(carry, live):
        # The predictor's 'exclusive' feedback: each live slot's fed-back mask only where it wins.
        key = fam.fed_back_mask
        return {**carry, key: exclusive_masks(carry[key], live)}

    def start_fn(flat_v, frame, masks, live):
        v = unflatten_vars(flat_v)
        # As the predictor: only the slots holding an object start; the others stay empty.
        carry = init(v, frame, masks, live, empty_carry(v, frame, objects))
        if not exclusive:
            return flatten(carry)[0]
        return {**flatten(exclude(carry, live))[0], LIVE: live}

    def step_fn(flat_v, flat_carry, frame):
        carry, logits = step(unflatten_vars(flat_v), unflatten_carry(flat_carry), frame)
        if exclusive:
            carry = exclude(carry, flat_carry[LIVE])
        out = flatten(carry)[0]
        if exclusive:
            out[LIVE] = flat_carry[LIVE]
        return out, jax.nn.sigmoid(logits[..., 0].astype(jnp.float32))

    return Streaming(start_fn, step_fn, flat_vars, example, carry_shapes)


def _spec(x) -> dict[str, Any]:
    return {"shape": [int(d) for d in x.shape], "dtype": str(np.dtype(x.dtype))}


def _entries(names: Sequence[str], values: Sequence[Any], docs: Mapping[str, str]) -> list[dict]:
    """signature.json's description of named values: arrays, or flat dicts of arrays."""
    out = []
    for name, value in zip(names, values):
        entry = {"name": name, "doc": docs[name]}
        if isinstance(value, Mapping):
            entry["leaves"] = [{"name": k, **_spec(value[k])} for k in sorted(value)]
        else:
            entry.update(_spec(value))
        out.append(entry)
    return out


def _flat_names(names: Sequence[str], values: Sequence[Any]) -> list[str]:
    """The module's flat argument (or result) names, in its order ('variables/params/...')."""
    out = []
    for name, value in zip(names, values):
        keys = sorted(value) if isinstance(value, Mapping) else [None]
        out += [name if k is None else f"{name}/{k}" for k in keys]
    return out


def _docs(image_size, objects, feedback) -> dict[str, str]:
    h, w = image_size
    return {
        "variables": "the model's variables: variables.npz as a dict, name -> array",
        "frame": (
            f"uint8 RGB frame at the model's input size {h}x{w}: the video frame resized with "
            "PIL's bilinear filter (Image.resize((W, H), Image.BILINEAR)), as the predictor does"
        ),
        "masks": (
            f"float32 0/1 mask of each of the {objects} object slots on the start frame at "
            f"{h}x{w}: the object's mask resized with nearest neighbour (Image.NEAREST); all "
            "zeros in an unused slot"
        ),
        "live": (
            "bool, one per object slot: True where the slot holds an object. The others keep an "
            "empty carry and take no part in the objects' competition for pixels; their "
            "probabilities mean nothing"
        ),
        "carry": (
            "the model's memory: a dict name -> array, each with the object slot as its leading "
            "axis; pass start's carry to step, and each step's carry to the next. "
            + (
                "Slots are independent (config.eval.feedback='independent'): a slot can be "
                "restarted on a later frame by splicing in that slot of start's carry"
                if feedback == "independent"
                else f"Slots compete for pixels (config.eval.feedback={feedback!r}); "
                f"'{LIVE}' holds start's `live`"
            )
        ),
        "probabilities": (
            f"float32 [{objects}, {h}, {w}]: each slot's foreground probability (sigmoid of the "
            "logits) at the model's input size; the predictor resizes it bilinearly to the frame "
            "size (jax.image.resize(p, (K, H0, W0), 'bilinear')) and clips it to [0, 1]"
        ),
    }


def write(stream: Streaming, output: str, platforms: Sequence[str], meta: Mapping[str, Any]):
    """Exports `stream` for `platforms` into `output` (FILES; signature.json written last).

    Returns:
      the signature (what signature.json holds).
    """
    platforms = check_platforms(platforms)
    storage.makedirs(output)
    variables, frame, masks, live = stream.example
    start = export(stream.start, platforms, variables, frame, masks, live)
    step = export(stream.step, platforms, variables, stream.carry, frame)
    probs = jax.ShapeDtypeStruct(masks.shape, jnp.float32)
    docs = _docs(meta["image_size"], masks.shape[0], meta["feedback"])
    functions = {}
    for name, exp, args, outs in (
        ("start", start, ("variables", "frame", "masks", "live"), ("carry",)),
        ("step", step, ("variables", "carry", "frame"), ("carry", "probabilities")),
    ):
        arg_values = {
            "variables": variables,
            "frame": frame,
            "masks": masks,
            "live": live,
            "carry": stream.carry,
        }
        out_values = {"carry": stream.carry, "probabilities": probs}
        a, o = [arg_values[n] for n in args], [out_values[n] for n in outs]
        flat_in, flat_out = _flat_names(args, a), _flat_names(outs, o)
        # The names follow the module's own argument and result order.
        assert [tuple(x.shape) for x in exp.in_avals] == [
            tuple(x.shape) for x in jax.tree.leaves(tuple(a))
        ], name
        assert len(flat_in) == len(exp.in_avals) and len(flat_out) == len(exp.out_avals), name
        _write_file(storage.join(output, FILES[name]), functools.partial(_put, exp.serialize()))
        functions[name] = {
            "file": FILES[name],
            "call": f"{name}({', '.join(args)}) -> {', '.join(outs)}",
            "args": _entries(args, a, docs),
            "outputs": _entries(outs, o, docs),
            "module_args": flat_in,
            "module_outputs": flat_out,
        }
    # Straight to the file: a full-size model's variables are gigabytes.
    _write_file(storage.join(output, FILES["variables"]), lambda f: np.savez(f, **stream.variables))
    signature = {
        "format": FORMAT,
        **meta,
        "objects": int(masks.shape[0]),
        "platforms": list(platforms),
        "jax_version": jax.__version__,
        "calling_convention_version": start.calling_convention_version,
        "variables": {"file": FILES["variables"], **_entries(["variables"], [variables], docs)[0]},
        "functions": functions,
        "how_to_run": (
            "jax.export.deserialize(open(file, 'rb').read()).call(*args) with the variables as "
            "dict(numpy.load('variables.npz')); frame 0 holds the given masks; docs/run_exported.py"
        ),
    }
    atomic.write_text(storage.join(output, FILES["signature"]), _json_text(signature))
    return signature


def _json_text(signature: Mapping[str, Any]) -> str:
    """Indented JSON with each array, flat list and {name, shape, dtype} on one line."""

    def one_line(match, limit=200):
        return " ".join(match.group(0).split()) if len(match.group(0)) < limit else match.group(0)

    def one_line_list(match):
        return (
            "[" + one_line(match)[1:-1].strip() + "]"
            if len(match.group(0)) < 200
            else match.group(0)
        )

    text = json.dumps(signature, indent=1)
    text = re.sub(r"\[[^\[\]{}]*?\]", one_line_list, text)
    text = re.sub(
        r'\{\s+"name": "[^"]*",\s+"shape": \[[^\]]*\],\s+"dtype": "\w+"\s+\}', one_line, text
    )
    return text + "\n"


def _put(data: bytes, f) -> None:
    f.write(data)


def _write_file(path: str, write: Callable[[Any], Any]) -> None:
    """`write(binary file)` into `path` (local or a URL), replaced whole (a reader never sees half
    a file): through a local temporary file, renamed or uploaded when complete."""
    with storage.staged_output(path) as local, open(local, "wb") as f:
        write(f)


def export_checkpoint(
    config,
    checkpoint: str,
    output: str,
    platforms: Sequence[str] = PLATFORMS,
    objects: int = 1,
    image_size: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The export command: the configured model with the checkpoint's weights -> `output`.

    Args:
      config: full config (or a config file spec); its model, data.image_size and eval.feedback.
      checkpoint: orbax variables/workdir/step directory, or an authors' .pth (as Segmenter).
      output: folder for FILES.
      platforms: jax.export platform names.
      objects: K object slots.
      image_size: (H, W) to export at (default config.data.image_size).

    Returns:
      the signature written to output/signature.json.

    Raises:
      ValueError: an offline family (named), bad platforms or slots, weights that do not fit.
    """
    from rnn_vos_jax.inference.segmenter import Segmenter
    from rnn_vos_jax.runtime import config_files

    if isinstance(config, str):
        config = config_files.load_config(config)
    platforms = check_platforms(platforms)
    model = models.build(config.model)
    streaming_family(model)  # before the weights are read
    if image_size is not None:
        config = config.copy_and_resolve_references()
        config.data.image_size = tuple(int(s) for s in image_size)
    seg = Segmenter.from_checkpoint(checkpoint, config)
    feedback = predictors.predictor_options(config)["feedback"]
    stream = streaming(seg.model, seg.variables, seg.image_size, objects, feedback)
    meta = {
        "family": models.family_of(seg.model).name,
        "model": json.loads(config.model.to_json()),
        "image_size": list(seg.image_size),
        "feedback": feedback,
        "checkpoint": str(checkpoint),
    }
    return write(stream, output, platforms, meta)
