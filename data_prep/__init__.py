"""Dataset preparation: synthetic YouTube-VOS-layout videos and raw folder -> TFRecord conversion.

Modules: make_synthetic (make_dataset), synthetic_render (shapes, textures, compositing),
convert (convert), shard_writer (one shard per call, atomic and checksummed).
"""
