"""User-facing errors: one line that names the file or config key and the fix."""


class AtsgError(Exception):
    """An error caused by input or configuration; the CLI prints it as one line and exits 2."""


class ConfigError(AtsgError):
    """A configuration value is missing, of the wrong type or inconsistent."""


class DataError(AtsgError):
    """A dataset file is missing, unreadable or inconsistent with the configuration."""
