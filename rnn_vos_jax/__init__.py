"""rnn_vos_jax: RNN-based semi-supervised video object segmentation in JAX/Flax.

The package root is the front door: the commands (`python -m rnn_vos_jax.main | segment | score
| submission | convert_torch`) and the Python API (`api`), each flags or arguments and then one
call into a room. The rooms, one per stage of the data flow, each say in their __init__ what
they hold and which rooms they may import: training/, evaluation/, inference/, data/, models/,
weights/, scoring/, runtime/. The shipped configs are installed as rnn_vos_jax.configs (the
repository's configs/ folder). docs/architecture.md draws the house.
"""
