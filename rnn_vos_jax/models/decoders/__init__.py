"""Decoders, one per family that has its own: memory outputs + encoder skips -> mask logits.

  s2s.py   DecoderSkip: the S2S / S2S++ skip decoder (align_corners=True upsampling)
  hs2s.py  DecoderRef: the HS2S decoder, matching the memories against the reference frames
           through a fusion block (models/fusion/) before the skip stages

Both end in the same heads: distance logits, segmentation logits, and the mask logit merged
from both. Families pick their decoder directly; there is no registry.
"""
