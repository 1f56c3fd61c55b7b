"""Examples of a folder of unlabelled images, for batch inference."""
