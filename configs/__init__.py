"""ml_collections configs, one file per model family: get_config(arg) (see each docstring)."""
