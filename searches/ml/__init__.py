"""Machine-learning building blocks shared by the ML search methods.

One concern per module: :mod:`~searches.ml.device` (where tensors live, mixed precision),
:mod:`~searches.ml.networks` (small torch networks, state-dict I/O), :mod:`~searches.ml.training`
(deterministic training loops), :mod:`~searches.ml.kfold` (out-of-fold scoring, the guarantee
that no event is scored by a model trained on it), :mod:`~searches.ml.features` (per-event
feature matrices from the event schema) and :mod:`~searches.ml.massfit` (smooth background fits
of a resonance mass inside an anomaly-selected region).
"""
