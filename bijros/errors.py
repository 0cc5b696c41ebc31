"""Exceptions with messages meant for the person who gave the input."""


class BijrosError(Exception):
    """Base class for errors the engine reports to users (CLI exit code 2)."""


class InputError(BijrosError):
    """Bad input: the message names the problem and what to do about it."""


class DeviceError(BijrosError):
    """The requested compute device is not available."""


class CancelledError(BijrosError):
    """The run was cancelled by the caller."""
