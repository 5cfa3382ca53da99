"""Config files: 'configs/hs2s.py[:ARG]' (a file, by its path) or 'hs2s[:ARG]' (a shipped config,
installed as rnn_vos_jax.configs) -> its get_config(ARG).

The commands take --config through ml_collections' config_flags (with --config.KEY=VALUE
overrides); the Python API, segment and the benchmarks load the same specs here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil

import ml_collections

from rnn_vos_jax import configs as shipped


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads 'configs/hs2s.py:demo' (a file) or 'hs2s:demo' (a shipped config) as a ConfigDict.

    Raises:
      FileNotFoundError: naming the file, or the shipped configs, when there is no such config.
    """
    name, _, arg = spec.partition(":")
    if name.endswith(".py"):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"config file not found: {name}")
        module_spec = importlib.util.spec_from_file_location("_rnn_vos_config", name)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        known = sorted(m.name for m in pkgutil.iter_modules(shipped.__path__) if m.name != "common")
        if name not in known:
            raise FileNotFoundError(
                f"no config {name!r}: pass a config file (configs/NAME.py) or one of {known}"
            )
        module = importlib.import_module(f"{shipped.__name__}.{name}")
    return module.get_config(arg or None)


def model_flags(argv: list[str]):
    """Fresh absl FlagValues holding a command's --config (its --config.KEY=VALUE overrides are
    looked up in `argv`) and --checkpoint: its own flags, so the command can also run in-process
    (tests, notebooks). segment and export add theirs."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Config file [:arg], e.g. configs/hs2s.py; --config.KEY=VALUE overrides.",
        flag_values=fv,
        sys_argv=argv,
    )
    flags.DEFINE_string(
        "checkpoint", None, "orbax checkpoint directory or authors' .pth", flag_values=fv
    )
    return fv
