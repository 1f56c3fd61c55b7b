"""Trainer executor that records the operating point in ML Metadata."""
