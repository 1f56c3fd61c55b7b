"""Data-quality check of the examples: near-duplicates, label conflicts, cross-split leaks."""
