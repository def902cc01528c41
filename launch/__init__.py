"""Entry points: ``python -m launch.<name>`` (train, sample, convert)."""
