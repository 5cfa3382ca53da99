"""Model families: S2S, S2S++ (models/s2s.py) and HS2S (models/hs2s.py).

`build(config.model)` turns a config section into a Flax module: `name` picks the family and
every other key (except `backbone_init`, a weight file read at init) is a field of its Model.
"""

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# name -> (module, class)
REGISTRY = {
    "s2s": ("rnn_vos_jax.models.s2s", "S2S"),
    "s2s_pp": ("rnn_vos_jax.models.s2s", "S2SPlusPlus"),
    "hs2s": ("rnn_vos_jax.models.hs2s", "HS2S"),
}
# Config keys that are not Module fields.
NON_FIELD_KEYS = ("name", "backbone_init")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def model_class(name: str) -> type[nn.Module]:
    """The Module class registered under `name` (e.g. 'hs2s')."""
    if name not in REGISTRY:
        raise ValueError(f"Unknown config.model.name {name!r}; expected one of {sorted(REGISTRY)}")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def _plain(value: Any) -> Any:
    # ConfigDict stores tuples as lists after overrides; module fields want hashable tuples.
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def build(model_config: Mapping[str, Any]) -> nn.Module:
    """Builds the model a `config.model` section describes.

    Args:
      model_config: ConfigDict or mapping with `name` and the Model's field values; `dtype` may
        be a string ('float32', 'bfloat16').

    Returns:
      The (unbound) Flax module.

    Raises:
      ValueError: unknown name, unknown field (named) or unknown dtype.
    """
    cfg = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
    if "name" not in cfg:
        raise ValueError(f"config.model.name is missing; expected one of {sorted(REGISTRY)}")
    cls = model_class(cfg["name"])
    kwargs = {k: _plain(v) for k, v in cfg.items() if k not in NON_FIELD_KEYS}
    if isinstance(kwargs.get("dtype"), str):
        if kwargs["dtype"] not in DTYPES:
            raise ValueError(
                f"Unknown config.model.dtype {kwargs['dtype']!r}; expected one of {sorted(DTYPES)}"
            )
        kwargs["dtype"] = DTYPES[kwargs["dtype"]]
    fields = {f.name for f in dataclasses.fields(cls) if f.init} - {"parent", "name"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(
            f"config.model has keys that {cls.__name__} does not take: {unknown}; "
            f"its fields are {sorted(fields)}"
        )
    return cls(**kwargs)
