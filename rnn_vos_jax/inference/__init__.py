"""Inference: per-video predictors (`predictors`: streaming with a carry, or whole clip for
offline families), the checks and resizes of their inputs (`predictor_inputs`), which object
owns a pixel (`object_merge`), a model with its weights (`segmenter.Segmenter`, the Python
API's object), and your own video end to end (`own_video`: frame sources and overlays in
`video_io`, first masks in `first_masks`, palette PNGs written on a thread by `png_writer`, a
progress bar in `progress`), and the streaming step shipped as `jax.export` modules (`exported`).

May import: models, weights, data, runtime.
"""
