"""Inference: per-video predictors (`predictors`: streaming with a carry, or whole clip for
offline families), the checks and resizes of their inputs (`predictor_inputs`), which object
owns a pixel (`object_merge`), the tracking state of one video (`tracker`: step, add, correct,
save and load; its folder format in `tracker_files`), many videos stepped together in object
slots (`slots`), a model with its weights (`segmenter.Segmenter`, the Python API's object), your
own video end to end (`own_video`: what it leaves in its output folder and when an earlier run
is reused or resumed in `segment_output`, the streaming run with resume and corrections in
`stream_run`, files and folders in `video_io`, live sources in `streams` and `y4m`, first masks
and corrections in `first_masks`, H.264 and GIF overlays in `overlay_video`, palette PNGs written
on a thread by `png_writer`, a progress bar in `progress`), and the streaming step shipped as
`jax.export` modules (`exported`).

May import: models, weights, data, runtime.
"""
