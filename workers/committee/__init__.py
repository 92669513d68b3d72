"""The committee of a finished run and its voting rules."""
