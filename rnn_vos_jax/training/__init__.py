"""Training: the loop (`loop.run`: resume, sharded steps, logging, checkpoints, preemption), the
train state and the pure jitted step (`train_state`), learning-rate and scheduled-sampling
schedules, the device mesh and FSDP layouts (`sharding`), and the demo job (`demo`: synthetic
data -> records -> training -> evaluation -> J&F table).

May import: evaluation, data, models, weights, scoring, runtime (the demo evaluates what it
trained; nothing below imports training).
"""
