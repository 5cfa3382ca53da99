"""JAX's persistent compilation cache, on by default for the commands: compile once per machine.

A compiled step is stored on disk under a key of its program, compile options, devices and JAX
version, so a second run of the same model at the same shapes (`main` resuming or evaluating,
`segment` on another video, a benchmark rerun) loads it in seconds instead of compiling for
minutes. Where (first that is set):

  1. `enable(path)`: the commands' --compilation_cache=DIR flag; 'off' turns the cache off;
  2. RNN_VOS_JAX_COMPILATION_CACHE=DIR (or 'off') in the environment;
  3. a cache the user already gave JAX (JAX_COMPILATION_CACHE_DIR, jax.config), kept as it is;
  4. CACHE_HOME/rnn_vos_jax/jax_compilation_cache, CACHE_HOME being $XDG_CACHE_HOME or ~/.cache.

On a pod, point every host at one shared folder (JAX writes entries from one process and reads
them on all). A corrupt or foreign entry never breaks a run: JAX reads an entry it cannot use as
a miss (with a warning) and compiles; entries of another JAX version or another program are never
looked up, as the key differs. JAX would then keep the corrupt file and compile again on every
run (it never overwrites an entry), so `enable` also removes an entry that fails to read, and the
step compiled instead takes its place. Every program is stored, however short its compile
(JAX's default keeps only those over 1 s); JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS, when set,
is kept.
"""

from __future__ import annotations

import os
from typing import Self

from rnn_vos_jax.runtime import storage

ENV = "RNN_VOS_JAX_COMPILATION_CACHE"
OFF = "off"
MIN_COMPILE_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"  # the user's choice is kept
# The key is JAX's own: every jitted step logs whether it was a hit at DEBUG.
_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_REQUEST_EVENT = "/jax/compilation_cache/compile_requests_use_cache"


def default_dir() -> str:
    """CACHE_HOME/rnn_vos_jax/jax_compilation_cache (CACHE_HOME: $XDG_CACHE_HOME or ~/.cache)."""
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(home, "rnn_vos_jax", "jax_compilation_cache")


def enable(path: str | None = None) -> str | None:
    """Turns the persistent compilation cache on for this process (before its first compile).

    Args:
      path: a folder, 'off', or None for the environment's choice, then the cache the user
        already gave JAX, then `default_dir()` (the module docstring has the order).

    Returns:
      The cache folder in use, or None when the cache is off.
    """
    import jax

    choice = path or os.environ.get(ENV)
    if choice is None and jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    if choice == OFF:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    # A gs:// folder works too: JAX reads and writes the cache through etils.epath, which
    # runtime/storage.py sets on the same gcsfs backend as every other file of the project.
    folder = storage.absolute(choice or default_dir())
    storage.makedirs(folder)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", folder)
    if MIN_COMPILE_ENV not in os.environ:
        # JAX stores only programs that compiled for over a second; the many small ones add
        # seconds to every warm start (2-3 s of the demo's, benchmarks/RESULTS.md).
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    _remove_entries_that_fail_to_read()
    return folder


def _remove_entries_that_fail_to_read() -> None:
    """Wraps JAX's cache read so that an entry it cannot read is deleted before JAX compiles.

    JAX's reader is private (jax._src.compilation_cache.get_executable_and_time); where it is
    missing the cache still works, only without this repair.
    """
    try:
        from jax._src import compilation_cache as jax_cache
        from jax._src import lru_cache
    except ImportError:
        return
    read = getattr(jax_cache, "get_executable_and_time", None)
    suffixes = [getattr(lru_cache, n, None) for n in ("_CACHE_SUFFIX", "_ATIME_SUFFIX")]
    if read is None or getattr(read, "removes_bad_entries", False) or None in suffixes:
        return

    def read_or_remove(cache_key, *args, **kwargs):
        try:
            return read(cache_key, *args, **kwargs)
        except Exception:
            import jax

            folder = jax.config.jax_compilation_cache_dir or ""
            for suffix in suffixes:
                storage.remove(storage.join(folder, f"{cache_key}{suffix}"))
            raise  # JAX warns, counts a miss and compiles; its write then takes the place

    read_or_remove.removes_bad_entries = True
    jax_cache.get_executable_and_time = read_or_remove


class CacheCounter:
    """Counts this process's persistent-cache lookups and hits (JAX's monitoring events), e.g.
    to log how many compiled steps a run loaded instead of compiling.

        with compile_cache.CacheCounter() as counts: ...; counts.hits, counts.requests
    """

    def __init__(self):
        self.hits = self.requests = 0

    def _on_event(self, event: str, **_) -> None:
        if event == _HIT_EVENT:
            self.hits += 1
        elif event == _REQUEST_EVENT:
            self.requests += 1

    def __enter__(self) -> Self:
        import jax

        jax.monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc) -> None:
        import jax

        jax.monitoring.unregister_event_listener(self._on_event)
