"""JAX's persistent compilation cache (runtime/compile_cache.py): where it goes, a second process
loads the predictor's compiled steps instead of compiling them, and corrupt entries are survived
and replaced. Counted with JAX's cache events, never timed."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One process segmenting 3 frames of a random video with the tiny HS2S, through the family's
# streaming predictor (init, step and the resize back, each a compiled program).
PREDICT = """
import json, sys
from rnn_vos_jax.runtime import compile_cache
folder = compile_cache.enable(sys.argv[1])
import jax, numpy as np
from rnn_vos_jax import models
from rnn_vos_jax.inference import predictors
model = models.build({"name": "hs2s", **models.family("hs2s").tiny})
with compile_cache.CacheCounter() as counts:
    variables = jax.jit(lambda k: models.init_variables(model, k, (32, 32)))(jax.random.key(0))
    predictor = predictors.predictor_for(model, variables, (32, 32))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 40, 36, 3), dtype=np.uint8)
    mask = np.zeros((40, 36), bool)
    mask[8:30, 10:20] = True
    probs = np.stack(list(predictor.predict(frames, {1: (0, mask)})))
print("RESULT", json.dumps({"folder": folder, "hits": counts.hits,
    "requests": counts.requests, "probs": probs.round(6).tolist()}))
"""


def _run(code: str, *args: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    # Every program is stored, however quick its compile: the test's are tiny.
    environ.update({"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PLATFORMS": "cpu"})
    environ.update(env)
    environ = {k: v for k, v in environ.items() if v is not None}  # None: unset
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environ,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_where_the_cache_goes(tmp_path):
    code = """
import json, os, sys
from rnn_vos_jax.runtime import compile_cache
import jax
got = {"default": compile_cache.default_dir()}
got["given"] = compile_cache.enable(sys.argv[1])
got["given_is_set"] = jax.config.jax_compilation_cache_dir
os.environ["RNN_VOS_JAX_COMPILATION_CACHE"] = sys.argv[2]
got["env"] = compile_cache.enable()
got["off"] = compile_cache.enable("off")
got["off_enabled"] = jax.config.jax_enable_compilation_cache
print("RESULT", json.dumps(got))
"""
    given, env = str(tmp_path / "given"), str(tmp_path / "env")
    got = _run(code, given, env, XDG_CACHE_HOME=str(tmp_path / "home"))
    assert got["default"] == str(tmp_path / "home" / "rnn_vos_jax" / "jax_compilation_cache")
    assert got["given"] == got["given_is_set"] == given and os.path.isdir(given)
    assert got["env"] == env
    assert got["off"] is None and got["off_enabled"] is False
    # A cache the user gave JAX is kept when nothing else is asked for.
    keep = """
import json
from rnn_vos_jax.runtime import compile_cache
print("RESULT", json.dumps(compile_cache.enable()))
"""
    assert _run(keep, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "theirs")) == str(
        tmp_path / "theirs"
    )
    # Every program is stored however quick its compile, unless the user set JAX's floor.
    floor = """
import json, sys
from rnn_vos_jax.runtime import compile_cache
import jax
compile_cache.enable(sys.argv[1])
print("RESULT", json.dumps(jax.config.jax_persistent_cache_min_compile_time_secs))
"""
    assert _run(floor, given, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=None) == 0.0
    assert _run(floor, given, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="2.5") == 2.5


def test_second_process_loads_the_steps_and_corrupt_entries_are_replaced(tmp_path):
    cache = str(tmp_path / "cache")
    cold = _run(PREDICT, cache)
    assert cold["folder"] == cache and cold["requests"] >= 3 and cold["hits"] == 0
    warm = _run(PREDICT, cache)
    # Every compiled program of the second run came from the cache: the steps' keys are stable.
    assert warm["hits"] == warm["requests"] == cold["requests"]
    assert warm["probs"] == cold["probs"]

    entries = sorted(f for f in os.listdir(cache) if f.endswith("-cache"))
    assert len(entries) == cold["requests"]
    broken = entries[::2]
    for i, name in enumerate(broken):  # cut short (an interrupted copy) or bytes flipped
        path = os.path.join(cache, name)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        if i % 2:
            data[len(data) // 2 : len(data) // 2 + 8] = bytes(b ^ 0xFF for b in data[:8])
        else:
            data = data[: len(data) // 2]
        with open(path, "wb") as f:
            f.write(bytes(data))
    survived = _run(PREDICT, cache)
    assert survived["probs"] == cold["probs"]
    assert survived["hits"] == survived["requests"] - len(broken)
    healed = _run(PREDICT, cache)  # the recompiled programs took the broken entries' places
    assert healed["hits"] == healed["requests"] and healed["probs"] == cold["probs"]


def test_cache_in_a_bucket(gcs_emulator):
    """A gs:// cache folder (the emulator): the first process stores its programs there, the
    second loads every one of them."""
    from rnn_vos_jax.runtime import storage

    cache = storage.join(gcs_emulator.bucket("cache"), "jax_cache")
    cold = _run(PREDICT, cache)
    assert cold["folder"] == cache and cold["requests"] >= 3 and cold["hits"] == 0
    entries = [n for n in storage.listdir(cache) if n.endswith("-cache")]
    assert len(entries) == cold["requests"]
    warm = _run(PREDICT, cache)
    assert warm["hits"] == warm["requests"] == cold["requests"]
    assert warm["probs"] == cold["probs"]
