"""`committee distill`: the driver, its stages, their outputs on disk, the report."""
