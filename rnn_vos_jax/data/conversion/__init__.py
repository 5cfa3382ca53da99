"""Raw folder -> TFRecord shards + dataset_info.json (`convert.convert`, resumable and strict
about bad files): one record per video (`video_record`), shards written atomically with their
sha256 (`shard_writer`). The command is data_prep/convert.py.
"""
