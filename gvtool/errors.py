"""The exceptions gvtool raises on purpose (stdlib only: every layer may import this).

Library code raises these with what it got and what it expected; only cli.py turns them into a
red line and a non-zero exit.
"""


class GvtoolError(Exception):
    """Base of every error gvtool raises on purpose."""


class BadInputError(GvtoolError):
    """User input is wrong: an option, a data file, a run folder, a checkpoint."""


class BadBundleError(GvtoolError):
    """A bundle is incomplete, tampered with, or of an unknown version."""


class ExportValidationError(GvtoolError):
    """An exported graph disagrees with the torch model beyond its tolerance."""


class BackendUnavailableError(GvtoolError):
    """A requested backend or device is not present on this machine."""
