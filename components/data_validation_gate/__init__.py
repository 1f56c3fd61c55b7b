"""Stops the pipeline when ExampleValidator found anomalies."""
