"""Shared by the tests that compare a run in a bucket with the same run on local disk."""

from rnn_vos_jax.runtime import storage


def tree(root: str) -> dict[str, bytes]:
    """{relative path: bytes} of every file below a local folder or bucket prefix."""
    out = {}
    for name in storage.listdir(root):
        path = storage.join(root, name)
        if storage.isfile(path):
            out[name] = storage.read_bytes(path)
        else:
            out.update({f"{name}/{k}": v for k, v in tree(path).items()})
    return out
