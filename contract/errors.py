"""The one error type of bad user input: the message names the key, flag or file (exit 2)."""


class ConfigError(ValueError):
    """Bad configuration: the message names the key."""
