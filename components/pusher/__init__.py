"""Pusher executor that publishes a model version whole or not at all."""
