"""User-facing errors: the CLI prints their message and exits with code 2, without a traceback."""


class CommitteeError(Exception):
    """Bad input or an impossible request that the user can fix (config, data, resources, run dir)."""


class ConfigError(CommitteeError):
    """The config file or an override is invalid; the message names the key."""


class DataError(CommitteeError):
    """A data root, dataset or file is missing or malformed; the message names the file (and row)."""


class ResourceError(CommitteeError):
    """The cluster cannot place what the config asks for; the message gives both sides."""


class CheckpointError(CommitteeError):
    """A checkpoint holds an unexpected file or a malformed one; nothing was loaded from it."""
