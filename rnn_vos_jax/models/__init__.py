"""Model families by name (`config.model.name`), and building a model from its config.

  family(name)        the Family record (models/family.py: the contract generic code relies on)
  family_of(model)    the Family of a built model
  build(config.model) the Flax module: `name` picks the family, every other key (but the
                      family's config-only keys, e.g. `backbone_init`) is a field of its model

Building blocks have registries of their own: models/cells/, models/fusion/, models/backbones/.
How to add a family or a block: models/README.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from rnn_vos_jax.models.family import Family
from rnn_vos_jax.models.registry import Registry

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

__all__ = ["DTYPES", "FAMILIES", "Family", "build", "families", "family", "family_of"]


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
