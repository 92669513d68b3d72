"""`committee serve`: a finished run's committee behind HTTP on Ray Serve (settings, the run's model, the
application, the driver)."""
