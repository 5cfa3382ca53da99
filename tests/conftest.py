"""Test set-up: 8 fake CPU devices, cheap compilation, one compilation cache, one synthetic dataset.

XLA's CPU optimisation passes cost most of the tests' time (compiling tiny models) and buy
nothing at tiny sizes: XLA_FLAGS turns them off (set before JAX is imported anywhere) for every
jax.jit of the session and of the subprocesses the tests start, which inherit the environment.
So does the persistent compilation cache (`compilation_cache`): a step compiled by one test is
loaded, not compiled again, by the next run of it, in this process or a subprocess (the training
runs of test_train, test_demo and test_multiprocess, the evaluation processes).

`synthetic` is the session's dataset: what every test that needs "some data" runs on.
"""

import dataclasses
import os

import pytest

FLAGS = (
    "--xla_force_host_platform_device_count=8",
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
)
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *FLAGS]).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Compilations that take longer than this go to the persistent cache (the model steps; not the
# many small jnp operations, whose writing would cost more than it saves).
CACHE_MIN_COMPILE_SECS = 1.0


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """The session's persistent compilation cache (one per xdist worker): on in this process and
    in every subprocess started from here on (they inherit the environment); its folder."""
    import jax

    path = str(tmp_path_factory.getbasetemp() / "jax_cache")
    settings = {
        "jax_compilation_cache_dir": path,
        "jax_persistent_cache_min_compile_time_secs": CACHE_MIN_COMPILE_SECS,
    }
    for key, value in settings.items():
        jax.config.update(key, value)
        os.environ[key.upper()] = str(value)
    return path


# The session's synthetic dataset (generate.make_dataset's arguments). Its properties that tests
# rely on (tests/test_synthetic.py checks the generator's on it):
# - train: 4 videos (shards of 2 + 2 records for two processes; DAVIS sets of 2 + 2), valid: 3;
# - two frame sizes, neither the tests' model size (32, 64): evaluation resizes both ways;
# - 1 to 3 objects a video; in valid objects that start after frame 0 (each with a valid frame
#   after its first, and every valid video has frames without a new object: sparse annotations);
#   objects that leave the frame;
# - valid_all_frames (every frame, valid every 5th).
SYNTHETIC = {
    "num_train": 4,
    "num_valid": 3,
    "seed": 79,
    "frame_sizes": ((36, 52), (40, 60)),
    "num_frames": (4, 6),
    "num_objects": (1, 3),
    "all_frames": True,
}
RECORD_SHARDS = 2


@dataclasses.dataclass(frozen=True)
class Synthetic:
    """Paths of the session's synthetic dataset (YouTube-VOS layout) and its TFRecords.

    Read-only: a test that breaks or changes data copies a split into its tmp_path first.
    """

    root: str  # holds train/, valid/, valid_all_frames/ and records/{train,valid}/
    options: dict  # SYNTHETIC: the make_dataset arguments
    train: str
    valid: str
    valid_all_frames: str
    train_records: str  # RECORD_SHARDS shards each
    valid_records: str

    @property
    def train_meta(self) -> str:
        return os.path.join(self.train, "meta.json")

    @property
    def valid_meta(self) -> str:
        return os.path.join(self.valid, "meta.json")


def _snapshot(root):
    """{relative path: (size, mtime)} of every file below `root`."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """The session's synthetic dataset and its records (made once per xdist worker); the
    session fails at the end if a test changed a file of it."""
    from rnn_vos_jax.data.conversion import convert
    from rnn_vos_jax.data.synthetic import generate

    root = str(tmp_path_factory.mktemp("synthetic"))
    splits = generate.make_dataset(root, **SYNTHETIC)
    records = {s: os.path.join(root, "records", s) for s in ("train", "valid")}
    for split, out in records.items():
        convert.convert(splits[split], out, num_shards=RECORD_SHARDS)
    before = _snapshot(root)
    yield Synthetic(
        root=root,
        options=dict(SYNTHETIC),
        train=splits["train"],
        valid=splits["valid"],
        valid_all_frames=splits["valid_all_frames"],
        train_records=records["train"],
        valid_records=records["valid"],
    )
    changed = sorted(set(before.items()) ^ set(_snapshot(root).items()))
    assert not changed, f"tests changed the shared synthetic dataset: {changed[:5]}"


@dataclasses.dataclass(frozen=True)
class GcsEmulator:
    """A Google Cloud Storage emulator (gcp-storage-emulator's server, tests/gcs_server.py) on
    127.0.0.1.

    `env` points every storage client the project uses at it (runtime.storage.emulator_env); it is
    set in this process while the fixture is alive, and subprocesses inherit it. `bucket(name)`
    gives a fresh bucket URL per test.
    """

    endpoint: str
    env: dict

    def bucket(self, name: str) -> str:
        import uuid

        import fsspec

        from rnn_vos_jax.runtime import storage

        bucket = f"{name}-{uuid.uuid4().hex[:8]}"
        fsspec.filesystem("gs").mkdir(bucket)  # a bare bucket name: gcsfs creates the bucket
        url = f"gs://{bucket}"
        assert storage.exists(url), url
        return url


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """A GCS emulator server (a real HTTP server in its own process), one per session and xdist
    worker: storage clients cache their endpoint per process, so one server outlives the tests."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from rnn_vos_jax.runtime import storage

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gcs_emulator") / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                os.path.join(os.path.dirname(__file__), "gcs_server.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(endpoint + "/", timeout=1).read()
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                time.sleep(0.05)
        env = storage.emulator_env(endpoint)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        yield GcsEmulator(endpoint=endpoint, env=env)
    finally:
        server.terminate()
        server.wait(timeout=10)
        for k, v in locals().get("old", {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
