"""The one error type hw raises for bad specs or op arguments: a one-line, user-facing message."""


class HardwareError(ValueError):
    """A preset, spec field or operation argument is invalid; the message names the field."""
