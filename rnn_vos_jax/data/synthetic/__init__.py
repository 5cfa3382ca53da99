"""A synthetic VOS dataset in the YouTube-VOS layout, deterministic for a seed: object
trajectories and the scene (`scene`), shapes and textures (`render`), the dataset folders and
meta.json (`generate.make_dataset`). The demo and the tests make their data with it; the
command is data_prep/make_synthetic.py.
"""
