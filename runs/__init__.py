"""Reading recorded pipeline runs back from ML Metadata: the summary, the inspector and the report."""
