"""Custom TFX components of the breast-ultrasound pipeline."""
