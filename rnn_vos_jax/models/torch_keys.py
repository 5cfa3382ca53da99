"""PyTorch state-dict keys -> Flax variable paths, and the tensor layout changes between them.

No torch import: tensors arrive as numpy arrays (see convert_torch.read_torch_file), so this
module also serves backbone initialisation from .npz files.

Naming rule shared by every model of the package (see models/backbones/resnet.py and vgg.py): a
torch key `a.b.3.conv_1.weight` names the Flax module path a/b/3/conv_1 (the ResNet keeps the
integer as its own module name) or a/b_3/conv_1 (VGG16 joins it to its parent). Both
sides are therefore compared in a canonical form in which every path separator is '_', after the
leaf has been renamed:

    conv/linear `weight` (ndim >= 2) -> params `kernel`  (O,I,kh,kw) -> (kh,kw,I,O); (O,I) -> (I,O)
    BatchNorm `weight` (ndim 1)      -> params `scale`
    `bias`                           -> params `bias`
    `running_mean` / `running_var`   -> batch_stats `mean` / `var`
    any other parameter (`relative`) -> params of the same name
    `num_batches_tracked`, `flatten_index` -> dropped
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

# Buffers with no Flax counterpart: BatchNorm's step counter, and the offset index Axial-DeepLab's
# attention layers derive from their span (models/backbones/axial.py).
DROPPED_LEAVES = ("num_batches_tracked", "flatten_index")
_STATS = {"running_mean": "mean", "running_var": "var"}

Path = tuple[str, ...]  # (collection, module..., leaf)


class ConversionError(ValueError):
    """A checkpoint's tensors do not match the model: lists every missing, unexpected and
    mis-shaped entry."""


_PARAM_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_STAT_LEAVES = {v: k for k, v in _STATS.items()}


def torch_leaf(collection: str, leaf: str) -> str:
    """The torch leaf name of a Flax leaf: kernel/scale -> weight, mean -> running_mean, ...;
    other params keep their name (torch nn.Parameter attributes, as `flax_leaf` reads them)."""
    if collection == "params":
        return _PARAM_LEAVES.get(leaf, leaf)
    if leaf not in _STAT_LEAVES:
        raise ValueError(f"no torch name for Flax leaf {collection}/{leaf}")
    return _STAT_LEAVES[leaf]


def flax_leaf(key: str, ndim: int) -> Path | None:
    """The Flax (collection, *modules, leaf) of torch key `key` whose tensor has `ndim` dims.

    Returns None for buffers that have no Flax counterpart (num_batches_tracked).
    """
    *mods, leaf = key.split(".")
    if leaf in DROPPED_LEAVES:
        return None
    if leaf in _STATS:
        return ("batch_stats", *mods, _STATS[leaf])
    if leaf == "weight":
        return ("params", *mods, "kernel" if ndim >= 2 else "scale")
    return ("params", *mods, leaf)


def canonical_modules(modules) -> str:
    """Convention-free form of a module path: names joined by '_' (so a/b_3 == a/b/3)."""
    return "_".join(modules)


def canonical(path: Path) -> str:
    """Convention-free form of a Flax path (see canonical_modules)."""
    collection, *mods, leaf = path
    return f"{collection}:{canonical_modules(mods)}:{leaf}"


def to_flax_layout(value: np.ndarray) -> np.ndarray:
    """Torch tensor layout -> Flax: conv OIHW -> HWIO, linear (O,I) -> (I,O), others unchanged."""
    value = np.asarray(value)
    if value.ndim == 4:
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if value.ndim == 2:
        return np.ascontiguousarray(value.T)
    return value


def to_torch_layout(value: np.ndarray) -> np.ndarray:
    """Inverse of `to_flax_layout`."""
    value = np.asarray(value)
    if value.ndim == 4:
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    if value.ndim == 2:
        return np.ascontiguousarray(value.T)
    return value


def flatten_variables(variables: Mapping[str, Any]) -> dict[Path, Any]:
    """{'params': {...}, 'batch_stats': {...}} -> {(collection, ..., leaf): leaf value}."""
    return {k: v for k, v in traverse_util.flatten_dict(dict(variables)).items()}


def unflatten_variables(flat: Mapping[Path, Any]) -> dict[str, Any]:
    """Inverse of `flatten_variables`."""
    return traverse_util.unflatten_dict(dict(flat))


def path_str(path: Path) -> str:
    return "/".join(path)


class KeyIndex:
    """Resolves torch keys against the Flax paths a model expects.

    Args:
      expected: {(collection, ..., leaf): array or ShapeDtypeStruct} of the model (or the part of
        it that is to be filled).

    Raises:
      ValueError: if two expected paths share a canonical form (the '_' rule would be ambiguous).
    """

    def __init__(self, expected: Mapping[Path, Any]):
        self.expected = dict(expected)
        self._by_canon: dict[str, Path] = {}
        for path in self.expected:
            c = canonical(path)
            if c in self._by_canon:
                raise ValueError(
                    f"ambiguous Flax paths {path_str(self._by_canon[c])} and {path_str(path)}"
                )
            self._by_canon[c] = path

    def resolve(self, key: str, ndim: int) -> Path | None:
        """The expected Flax path of torch `key`, or None if the model has no such variable."""
        leaf = flax_leaf(key, ndim)
        return None if leaf is None else self._by_canon.get(canonical(leaf))

    def convert(
        self, state: Mapping[str, np.ndarray], source: str, *, strict_missing: bool = True
    ) -> dict[Path, np.ndarray]:
        """Maps a flat torch state dict onto the expected paths, checking everything.

        Args:
          state: torch key -> numpy tensor (torch layout).
          source: what `state` came from (file name), for the error message.
          strict_missing: whether expected paths without a tensor are an error.

        Returns:
          {flax path: float32 array in Flax layout}, each expected path at most once.

        Raises:
          ConversionError: listing all unexpected keys, mis-shaped tensors and (if strict)
            missing Flax variables.
        """
        out: dict[Path, np.ndarray] = {}
        seen: set[Path] = set()
        unexpected, misshaped, duplicate = [], [], []
        for key in sorted(state):
            value = np.asarray(state[key])
            if flax_leaf(key, value.ndim) is None:
                continue
            path = self.resolve(key, value.ndim)
            if path is None:
                unexpected.append(f"{key} {tuple(value.shape)}")
                continue
            if path in seen:
                duplicate.append(f"{key} -> {path_str(path)}")
                continue
            seen.add(path)
            arr = to_flax_layout(value).astype(np.float32)
            want = tuple(self.expected[path].shape)
            if arr.shape != want:
                misshaped.append(
                    f"{key}: torch shape {tuple(value.shape)} -> {arr.shape}, "
                    f"but {path_str(path)} needs {want}"
                )
                continue
            out[path] = arr
        missing = []
        if strict_missing:
            # Mis-shaped tensors resolved to their path: they are reported once, not as missing.
            missing = [
                f"{path_str(p)} {tuple(v.shape)}"
                for p, v in sorted(self.expected.items())
                if p not in seen
            ]
        if unexpected or misshaped or missing or duplicate:
            raise ConversionError(
                format_problems(source, missing, unexpected, misshaped, duplicate)
            )
        return out


def format_problems(
    source: str,
    missing: list[str],
    unexpected: list[str],
    misshaped: list[str],
    duplicate: list[str] = (),
) -> str:
    """One readable message listing every problem, grouped by kind."""
    counts = (
        f"{len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} mis-shaped"
        + (f", {len(duplicate)} duplicate" if duplicate else "")
    )
    lines = [f"{source} does not match the model ({counts}):"]
    for title, items in (
        ("missing (model variables with no tensor in the file)", missing),
        ("unexpected (tensors in the file with no model variable)", unexpected),
        ("mis-shaped", misshaped),
        ("duplicate (two tensors for one variable)", duplicate),
    ):
        if items:
            lines.append(f"  {title}:")
            lines.extend(f"    {item}" for item in items)
    return "\n".join(lines)
