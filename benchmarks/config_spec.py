"""The benchmarks' config argument: 'configs/hs2s.py:ARG', 'hs2s.py:ARG' or 'hs2s:ARG'."""

import importlib
import os


def load_config(spec: str):
    """configs/<name>.py's get_config(ARG or None), unlocked so benchmarks may set keys."""
    name, _, arg = spec.partition(":")
    module = os.path.splitext(os.path.basename(name))[0]
    config = importlib.import_module(f"configs.{module}").get_config(arg or None)
    config.unlock()
    return config
