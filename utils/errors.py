"""User-facing errors: the entry scripts print these as one line and exit, without a traceback."""


class UserError(Exception):
    """Bad input from the user (a file, a config key, a CLI flag). The message names what and why."""


class ConfigError(UserError):
    """An invalid configuration: the message names the full key path."""


class DataError(UserError):
    """An invalid dataset file: the message names the file and the problem."""
