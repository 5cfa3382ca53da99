"""Long-job plumbing: several processes (`multihost`), preemption signals (`preemption`),
orbax checkpoints and model variables on disk (`checkpoints`), host memory (`host_memory`),
metric logs (`metric_writer`), FLOPs and MFU (`throughput`), the run record (`run_info`), config
files by path (`config_files`) and the one atomic file writer (`atomic`). Nothing here imports
JAX at package import.

May import: no other room (the shipped configs, rnn_vos_jax.configs, are not a room).
"""
