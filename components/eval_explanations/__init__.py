"""Grad-CAM explanations of eval images, made in the pipeline so that the report only reads them."""
