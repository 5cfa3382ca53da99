"""Evaluation of checkpoints: the job (`job`: checkpoint -> per-video prediction -> palette PNGs
-> done markers -> metrics.json, resumable, shared by several processes, or watching a
training run), where its videos come from (`videos`: a raw folder or converted records), what
it runs per video (`predict`: the family's predictor and its per-frame outputs) and how fast
(`timing`).

May import: inference, models, data, scoring, runtime.
"""
