"""Storage: checkpoints and their format, paths and URIs, TensorBoard events."""
