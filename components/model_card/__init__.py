"""The model card of each run's model, and of each pushed version."""
