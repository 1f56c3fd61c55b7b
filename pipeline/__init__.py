"""The pipeline's definition: its configuration, the components and their wiring, the blessing
gates and the cache keys."""
