"""The library's exception hierarchy.

Every error a user can fix by changing an input, a path, a parameter or a
config file derives from :class:`SegaeError`, so the CLI can turn it into one
clear line (exit code 2) while genuine bugs keep their tracebacks.
"""


class SegaeError(Exception):
    """Base class of every error the user can act on."""


class ConfigError(SegaeError, ValueError):
    """A parameter, config key or command-line option is missing or invalid."""


class SchemaError(SegaeError, ValueError):
    """A table lacks a column, or a column has a type the step cannot use."""


class TableNotFoundError(SegaeError, FileNotFoundError):
    """An input path does not exist, or is not the kind of table expected."""


class CommitConflictError(SegaeError):
    """A Delta commit lost a race with another writer and was not applied."""


class ArtifactError(SegaeError):
    """A model directory is missing files, is corrupt, or has an unknown format."""


class NotFittedError(SegaeError):
    """A model was used before it was fitted or loaded."""


class TableExistsError(SegaeError, FileExistsError):
    """A write with mode="error" found a table already at the target path."""
