"""Test set-up: 8 fake CPU devices (set before JAX is imported anywhere), cheap compilation.

XLA's CPU optimisation passes cost most of the tests' time (compiling tiny models) and buy
nothing at tiny sizes: XLA_FLAGS turns them off for every jax.jit of the session (no per-call
compiler options needed) and of the subprocesses the tests start, which inherit the flags.
"""

import os

FLAGS = (
    "--xla_force_host_platform_device_count=8",
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
)
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *FLAGS]).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
