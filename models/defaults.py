"""The model's defaults that the configuration and the command line read without loading
TensorFlow: a command that only reads ML Metadata (`python -m runs.inspect`) never builds a
network. models/networks.py holds the recipes these names choose."""

DEFAULT_NETWORK = 'efficientnet_lite0'
