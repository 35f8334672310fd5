"""Errors a user can act on. The CLI prints their message in one line, without a traceback."""

__all__ = ["QDAIFError", "ConfigError", "RunDirError", "ModelNotFoundError"]


class QDAIFError(Exception):
    """Base class of the errors whose message tells the user what to do."""


class ConfigError(QDAIFError):
    """A config value, domain file or command-line override is wrong."""


class RunDirError(QDAIFError):
    """A run directory is missing, incomplete or not a qdaif run."""


class ModelNotFoundError(QDAIFError):
    """The weights of the requested model cannot be found on this machine."""
