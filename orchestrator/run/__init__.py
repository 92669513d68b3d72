"""A run's lifecycle: its directory, prepare, plan, placement and monitoring on Ray, the driver and its report."""
