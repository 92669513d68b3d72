"""Config: the typed sections of every command, the strict YAML loader and overrides, error messages, the reference table."""
