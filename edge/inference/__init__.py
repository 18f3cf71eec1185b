"""Local inference on the edge: the flood-rise forecaster and the slope-acceleration detector.

features.py   (pure, no numpy) the forecaster's input vector from a causal depth history
rule.py       (pure) the rule baseline: 10-minute depth slope projected ahead
evaluate.py   (pure) lead-time / false-alarm scoring of warnings over events
events.py     reading FloodNet-format event CSVs
decision.py   (pure) ``should_close``: forecast + the 15 cm fallback
int8.py       (pure) the edge's own int8 TFLite runner, bit for bit LiteRT's reference kernels
runtime.py    model loading, SHA-256 check against the card, int8 runner or LiteRT, worker thread
flood.py      ``FloodForecaster``: what the edge agent feeds samples to
slope.py      (pure) velocity/acceleration, inverse-velocity time of failure, alert levels
train.py      TensorFlow training (``jikimi model train``; imported lazily, never at run time)
cli.py        ``jikimi model train|warnings``
bench.py      inference latency for ``jikimi bench edge``
"""
