"""Experiment configs: ``configs/<family>.py`` defines ``get_config(variant)``."""
