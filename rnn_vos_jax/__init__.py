"""rnn_vos_jax: RNN-based semi-supervised video object segmentation in JAX/Flax."""
