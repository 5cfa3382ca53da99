r"""Ship the streaming step compiled: start and step as `jax.export` modules for named platforms.

    python -m rnn_vos_jax.export --config=configs/hs2s.py --checkpoint=PATH --output=DIR \
        [--platforms=cpu,cuda,tpu] [--objects=K] [--image_size=H,W] [--config.KEY=VALUE ...]

Writes DIR/start.jax_export and DIR/step.jax_export (serialized jax.export modules, lowered for
every platform named, on any machine), DIR/variables.npz (plain numpy) and, last,
DIR/signature.json (every argument and output with its shape and dtype, the carry's leaves
included, and how frames, masks and probabilities are laid out). docs/run_exported.py runs them
on a video with only jax and numpy (and PIL for images) installed. PATH is an orbax checkpoint
(directory) or an authors' .pth. Offline families (whole-clip prediction) have no step to export.

What is exported and how: inference/exported.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rnn_vos_jax.inference import exported

USAGE = (
    "python -m rnn_vos_jax.export --config=CFG --checkpoint=PATH --output=DIR "
    "[--platforms=cpu,cuda,tpu] [--objects=K] [--image_size=H,W] [--config.KEY=VALUE ...]"
)


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line (argv[0] is the program name); exits with a one-line error on bad input.
    Returns the signature written."""
    from absl import flags

    from rnn_vos_jax.runtime import config_files

    argv = list(sys.argv if argv is None else argv)
    fv = config_files.model_flags(argv)
    flags.DEFINE_string("output", None, "output folder", flag_values=fv)
    flags.DEFINE_list(
        "platforms", list(exported.PLATFORMS), "jax.export platforms to lower for", flag_values=fv
    )
    flags.DEFINE_integer("objects", 1, "object slots K of start and step", flag_values=fv)
    flags.DEFINE_list(
        "image_size",
        None,
        "H,W the model runs at (default: config.data.image_size)",
        flag_values=fv,
    )
    if {"--help", "-h", "--helpfull"} & set(argv[1:]):
        print(f"usage: {USAGE}\n\n{__doc__.splitlines()[0]}\n\n{fv.get_help()}")
        raise SystemExit(0)
    try:
        fv(argv)
        missing = [f"--{n}" for n in ("config", "checkpoint", "output") if fv[n].value is None]
        if missing:
            raise flags.Error(f"missing {', '.join(missing)}")
        size = fv.image_size and [int(s) for s in fv.image_size]
        if size is not None and len(size) != 2:
            raise flags.Error(f"--image_size={','.join(fv.image_size)}: expected H,W")
    except (flags.Error, ValueError) as error:
        raise SystemExit(f"export: {error}\nusage: {USAGE}") from None
    try:
        signature = exported.export_checkpoint(
            fv.config, fv.checkpoint, fv.output, fv.platforms, fv.objects, size
        )
    except (FileNotFoundError, ValueError, OSError) as error:
        raise SystemExit(f"export: {error}") from None
    h, w = signature["image_size"]
    print(
        f"{signature['family']}: start and step for {signature['objects']} object slot(s) at "
        f"{h}x{w}, platforms {', '.join(signature['platforms'])} -> {fv.output}"
    )
    return signature


if __name__ == "__main__":
    main()
