"""Driver side of committee: CLI, config, plans, Ray connection and placement, drivers, reports."""
