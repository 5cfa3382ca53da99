"""RAFT's pieces (princeton-vl/RAFT, re-implemented; spec §6), used by the RAFT-HS2S family.

correlation.py  all-pairs correlation at 1/8, its average-pooled pyramid, the radius-r lookup
update.py       BasicUpdateBlock: motion encoder, SepConvGRU, flow head, mask head
upsample.py     convex x8 upsampling of the coarse flow
flow.py         the refinement loop: iterations of lookup + update from zero flow
photometric.py  the unsupervised photometric loss (backward warping, L1, valid pixels)
weights.py      config.model.raft_init: the update block from a RAFT checkpoint
"""
