"""Commands that measure the pipeline and print tables."""
