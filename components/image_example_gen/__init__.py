"""ExampleGen over folders of ultrasound images, one folder per class."""
