"""Local inference on the edge: the flood-rise forecaster and the slope-acceleration detector.

features.py   (pure) the forecaster's input vector from a causal depth history
rule.py       (pure) the rule baseline: 10-minute depth slope projected ahead
evaluate.py   (pure) lead-time / false-alarm scoring of warnings over events
events.py     reading FloodNet-format event CSVs
decision.py   (pure) ``should_close``: forecast + the 15 cm fallback
runtime.py    LiteRT loading, SHA-256 check against the model card, worker thread
flood.py      ``FloodForecaster``: what the edge agent feeds samples to
slope.py      (pure) velocity/acceleration, inverse-velocity time of failure, alert levels
train.py      TensorFlow training (``jikimi model train``; imported lazily, never at run time)
cli.py        ``jikimi model train|warnings``
bench.py      inference latency for ``jikimi bench edge``
"""
