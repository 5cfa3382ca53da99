"""Install: pip install -e ".[test]"  (extras: test, convert)."""

import setuptools

setuptools.setup(
    name="rnn_vos_jax",
    version="0.1.0",
    description=(
        "JAX/Flax reimplementation of RNN-based semi-supervised video object "
        "segmentation: S2S, S2S++ and HS2S."
    ),
    python_requires=">=3.11,<3.13",
    # configs/ (the recipes users read and pass by path) is installed as rnn_vos_jax.configs: a
    # config file imports its shared pieces from there, from any working directory, and no
    # top-level package named `configs` can collide with a user's own.
    packages=[
        *setuptools.find_packages(include=["rnn_vos_jax", "rnn_vos_jax.*"]),
        "rnn_vos_jax.configs",
    ],
    package_dir={"rnn_vos_jax.configs": "configs"},
    install_requires=[
        "jax>=0.10,<0.13",
        "jaxlib>=0.10,<0.13",
        "flax>=0.12,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "tensorflow-cpu>=2.18,<2.22",
        "tensorflow-datasets>=4.9,<5",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",
        "pillow>=10,<13",
        "opencv-python-headless>=4.8,<6",
        # H.264 overlays: its wheels ship FFmpeg with libx264 (OpenCV's write only 'mp4v').
        "av>=14,<19",
        "ml-collections>=0.1.1,<2",
        "absl-py>=2,<3",
        "tensorboardX>=2.6,<3",
        # The path layer (runtime/storage.py): etils.epath on fsspec; gcsfs serves gs://.
        "etils[epath]>=1.7",
        "fsspec>=2024.2",
        "gcsfs>=2024.2",
        # TFRecord framing checksums (rnn_vos_jax/data/record_io.py).
        "google-crc32c>=1.5",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            # A real GCS server on 127.0.0.1 for the gs:// tests.
            "gcp-storage-emulator>=2024.8",
        ],
        "convert": ["torch>=2.2,<3"],
    },
)
