"""What a run needs around the pipeline: one run per output directory, the ML Metadata connection
and the lock every runner takes."""
