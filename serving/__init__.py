"""The prediction CLI and the local REST and gRPC server: they read the serving directory and know
the SavedModel's signatures, not the pipeline."""
