"""Model families by name (`config.model.name`), and building a model from its config.

  family(name)        the Family record (models/family.py: the contract generic code relies on)
  family_of(model)    the Family of a built model
  build(config.model) the Flax module: `name` picks the family, every other key (but the
                      family's config-only keys, e.g. `backbone_init`) is a field of its model
  init_variables / expected_variables / check_variables
                      a model's variable tree: initialised, as shapes, and checked against
                      variables from a file (training, conversion and the API share them)

Building blocks have registries of their own: models/cells/, models/fusion/, models/backbones/.
The families' losses (`losses`) and the PyTorch key maps of their weights (`torch_keys`,
`torch_layouts`) live here too. How to add a family or a block: models/README.md.

May import: no other room (a family is known only to its module and this registry).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnn_vos_jax.models.family import Family
from rnn_vos_jax.models.registry import Registry
from rnn_vos_jax.models.torch_keys import Path, flatten_variables, path_str

FAMILIES = Registry(
    "config.model.name",
    {
        "s2s": "rnn_vos_jax.models.s2s:S2S_FAMILY",
        "s2s_pp": "rnn_vos_jax.models.s2s:S2SPP_FAMILY",
        "hs2s": "rnn_vos_jax.models.hs2s:FAMILY",
        "bi_hs2s": "rnn_vos_jax.models.bi_hs2s:FAMILY",
        "raft_hs2s": "rnn_vos_jax.models.raft_hs2s:FAMILY",
    },
)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

__all__ = [
    "DTYPES",
    "FAMILIES",
    "Family",
    "build",
    "check_variables",
    "expected_variables",
    "families",
    "family",
    "family_of",
    "init_variables",
]
# Parameters do not depend on the frame size for most models; those whose do (Axial-DeepLab's
# relative tables) need the real one.
ANY_SIZE = (64, 64)


def family(name: str) -> Family:
    """The family registered as `name` (ValueError listing the known names otherwise)."""
    return FAMILIES[name]


def families() -> list[Family]:
    """Every registered family (imports their modules)."""
    return [FAMILIES[n] for n in FAMILIES]


def family_of(model: nn.Module) -> Family:
    """The family whose model class `model` is an instance of (the exact class)."""
    for fam in families():
        if type(model) is fam.model:
            return fam
    raise ValueError(f"{type(model).__name__} is not the model of a registered family")


def _plain(value: Any) -> Any:
    # ConfigDict stores tuples as lists after overrides; module fields want hashable tuples.
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def build(model_config: Mapping[str, Any]) -> nn.Module:
    """Builds the model a `config.model` section describes.

    Args:
      model_config: ConfigDict or mapping with `name` and the model's field values; `dtype` may
        be a string ('float32', 'bfloat16').

    Returns:
      The (unbound) Flax module.

    Raises:
      ValueError: unknown name, unknown field (named) or unknown dtype.
    """
    cfg = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
    if "name" not in cfg:
        raise ValueError(f"config.model.name is missing; expected one of {sorted(FAMILIES)}")
    fam = family(cfg["name"])
    skip = ("name", *fam.config_only_keys)
    kwargs = {k: _plain(v) for k, v in cfg.items() if k not in skip}
    if isinstance(kwargs.get("dtype"), str):
        if kwargs["dtype"] not in DTYPES:
            raise ValueError(
                f"Unknown config.model.dtype {kwargs['dtype']!r}; expected one of {sorted(DTYPES)}"
            )
        kwargs["dtype"] = DTYPES[kwargs["dtype"]]
    fields = {f.name for f in dataclasses.fields(fam.model) if f.init} - {"parent", "name"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(
            f"config.model has keys that {fam.model.__name__} does not take: {unknown}; "
            f"its fields are {sorted(fields)}"
        )
    return fam.model(**kwargs)


def init_variables(model: nn.Module, rng: jax.Array, image_size: Sequence[int]) -> dict:
    """{'params', 'batch_stats'} of `model` initialised on a 1-sample, 2-frame dummy clip of
    `image_size` (H, W) (shapes do not depend on the batch or the clip length)."""
    h, w = image_size
    frames = jnp.zeros((1, 2, h, w, 3), jnp.uint8)
    masks = jnp.zeros((1, 2, h, w, 1), jnp.float32)
    k_params, k_sample = jax.random.split(rng)
    variables = model.init(
        {"params": k_params, "sample": k_sample}, frames, masks, sample_prob=0.0, train=False
    )
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def expected_variables(
    model: nn.Module, image_size: Sequence[int] | None = None
) -> dict[Path, jax.ShapeDtypeStruct]:
    """Flat {(collection, ..., leaf): ShapeDtypeStruct} of `model`'s variables (no compilation).

    image_size: the (H, W) the model runs at; None for ANY_SIZE (right unless the parameters
    depend on the frame size).
    """
    size = tuple(image_size or ANY_SIZE)
    key = jax.random.key(0)
    return flatten_variables(jax.eval_shape(lambda k: init_variables(model, k, size), key))


def check_variables(
    variables: Mapping[str, Any],
    model: nn.Module,
    image_size: Sequence[int] | None,
    source: str,
) -> None:
    """Raises ValueError listing every variable whose presence or shape differs from `model`'s.

    Args:
      variables: {'params'[, 'batch_stats']} from `source` (arrays or shapes).
      model: the built model they should fit.
      image_size: as `expected_variables`.
      source: what they came from (a file name), for the message.
    """
    expected = expected_variables(model, image_size)
    got = flatten_variables(
        {"params": variables["params"], "batch_stats": variables.get("batch_stats") or {}}
    )
    missing = [f"{path_str(p)} {tuple(v.shape)}" for p, v in expected.items() if p not in got]
    extra = [path_str(p) for p in got if p not in expected]
    bad = [
        f"{path_str(p)}: {tuple(np.shape(got[p]))} != {tuple(v.shape)}"
        for p, v in expected.items()
        if p in got and tuple(np.shape(got[p])) != tuple(v.shape)
    ]
    if missing or extra or bad:
        lines = [f"{source} does not fit the model ({type(model).__name__}):"]
        for title, items in (("missing", missing), ("unexpected", extra), ("mis-shaped", bad)):
            if items:
                lines.append(f"  {title}: " + ", ".join(items[:20]))
                if len(items) > 20:
                    lines.append(f"    ... and {len(items) - 20} more")
        raise ValueError("\n".join(lines))
