r"""Converts the authors' PyTorch checkpoints (HS2S, S2S++) into Flax variables.

  python -m rnn_vos_jax.convert_torch --checkpoint=Model/weights_HS2S.pth \
      --config=configs/hs2s.py --output=converted/hs2s
  python -m rnn_vos_jax.convert_torch --checkpoint=s2s_pp.pth --config=configs/s2s_pp.py \
      --output=converted/s2s_pp

The output is an orbax variables directory (runtime/checkpoints.py `save_variables`), accepted by `--mode=eval` (as the workdir's
weights via `--config.init_from`) and by `api.Segmenter.from_checkpoint`.

The conversion and its checks: weights/torch_checkpoints.py.
"""

import jax

from rnn_vos_jax.runtime import storage
from rnn_vos_jax.weights import torch_checkpoints


def main(argv):
    from absl import flags

    del argv
    cfg, fl = flags.FLAGS.config, flags.FLAGS
    try:
        variables = torch_checkpoints.convert_to_directory(
            fl.checkpoint, cfg.model, fl.output, cfg.data.image_size
        )
    except (ValueError, OSError, ImportError) as e:
        raise SystemExit(f"convert_torch: {e}") from None
    n_stats = len(jax.tree.leaves(variables.get("batch_stats", {})))
    print(
        f"Converted {fl.checkpoint} ({cfg.model.name}): {torch_checkpoints.count_parameters(variables):,} "
        f"parameters, {n_stats} BatchNorm statistics -> {storage.absolute(fl.output)}"
    )


def _define_flags():
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Model config file (e.g. configs/hs2s.py).")
    flags.DEFINE_string("checkpoint", None, "The authors' PyTorch checkpoint (.pth).")
    flags.DEFINE_string(
        "output", None, "Output directory (orbax, via runtime/checkpoints.py save_variables)."
    )
    flags.mark_flags_as_required(["config", "checkpoint", "output"])


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
