"""Data: raw YouTube-VOS / DAVIS folders (`vos_reader`, `meta`), PNG ids and the palette
(`annotations`), the TFRecord schema and files (`record_schema`, `record_files`), the tf.data
training clips and their augmentation (`pipeline`, `augment`), border-distance maps
(`distance`), evaluation videos (`eval_video`, `eval_records`), and two producers of data:
`conversion/` (raw folder -> TFRecord shards) and `synthetic/` (a synthetic dataset in the
YouTube-VOS layout). TensorFlow is imported only here (pipeline, record_files, eval_records,
conversion), and only by the modules that need it.

May import: runtime.
"""
