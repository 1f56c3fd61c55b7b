"""The model card of each run's model, copied beside the pushed version."""
