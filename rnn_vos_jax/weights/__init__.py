"""Weights in and out: the authors' PyTorch checkpoints to Flax variables and back
(`torch_checkpoints`) and ImageNet backbone initialisation (`backbone_init`). torch only to
read .pth files, and only when one is read.

May import: models, runtime.
"""
