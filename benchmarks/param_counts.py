r"""Parameter counts of every model at 256x448, from the shipped configs (no FLOPs, no weights).

Shapes come from `jax.eval_shape` of `model.init`, so this runs in seconds on a CPU even for the
~400M-parameter HS2S. Counts are trainable parameters (the torch `named_parameters` layout of the
authors' code: BatchNorm running statistics are not counted).

  python benchmarks/param_counts.py [--configs=s2s,s2s_pp,s2s_pp:fcn,hs2s,hs2s:resnet101]

The default lists every registered family's config (configs/<family>.py) with each of the
config arguments in its VARIANTS.
"""

import argparse
import importlib

import jax

from rnn_vos_jax import models
from rnn_vos_jax.runtime.config_files import load_config


def default_configs() -> str:
    """'name[:arg],...' for every registered family's config and each of its VARIANTS."""
    names = []
    for family in models.FAMILIES:
        module = importlib.import_module(f"rnn_vos_jax.configs.{family}")
        names += [f"{family}:{a}" if a else family for a in getattr(module, "VARIANTS", ("",))]
    return ",".join(names)


HEIGHT, WIDTH = 256, 448


def abstract_variables(config_name: str, image_size: tuple[int, int] | None = (HEIGHT, WIDTH)):
    """Model and variable shapes (no values) of the model `configs/<name>.py[:arg]` builds.

    Args:
      config_name: e.g. 'hs2s' or 'hs2s:resnet101' (module in configs/, optional get_config arg).
      image_size: (H, W) of the frames; None = the config's data.image_size. Blocks with
        position tables (axial attention) have size-dependent parameters.

    Returns:
      (model, variables) with variables a pytree of jax.ShapeDtypeStruct.
    """
    config = load_config(config_name)
    model = models.build(config.model)
    h, w = image_size or tuple(config.data.image_size)
    variables = jax.eval_shape(lambda k: models.init_variables(model, k, (h, w)), jax.random.key(0))
    return model, variables


def counts_of(variables) -> dict[str, int]:
    """Trainable parameters per top-level submodule, e.g. {'encoder': 25648448, ...}."""
    return {
        name: sum(x.size for x in jax.tree.leaves(tree))
        for name, tree in variables["params"].items()
    }


def count_params(config_name: str) -> dict[str, int]:
    """counts_of the model `configs/<name>.py[:arg]` builds, at 256x448."""
    return counts_of(abstract_variables(config_name)[1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="", help="comma-separated config names (all)")
    args = parser.parse_args(argv)
    print(f"Parameter counts at {HEIGHT}x{WIDTH} (trainable parameters)")
    for name in (args.configs or default_configs()).split(","):
        counts = count_params(name)
        total = sum(counts.values())
        print(f"\n{name}: {total:,} ({total / 1e6:.1f}M)")
        for sub, n in counts.items():
            print(f"  {sub:<24s} {n:>13,}")


if __name__ == "__main__":
    main()
