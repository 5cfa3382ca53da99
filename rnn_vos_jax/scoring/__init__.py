"""Scoring any method's masks: J, F, J&F with the DAVIS toolkit's definitions, recall and decay
(`metrics`), folders of PNGs against ground truth (`folders`), the toolkit's CSV tables
(`toolkit_csv`) and the YouTube-VOS submission check and zip (`submission`). numpy, OpenCV and
PIL only: no JAX, Flax or TensorFlow (a test checks), so `python -m rnn_vos_jax.score` starts
in about a second.

May import: data, runtime (PNG ids and meta.json; the atomic writer).
"""
