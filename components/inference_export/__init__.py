"""BulkInferrer's prediction logs as CSV and JSON lines."""
