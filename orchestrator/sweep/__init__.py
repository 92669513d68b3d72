"""`committee sweep`: the space and its points, data per point, the Tune wiring, the report."""
