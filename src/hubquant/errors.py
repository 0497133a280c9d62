"""Exception hierarchy. Each error carries a message that names the value and the fix.

The edges (CLI, Space, webhook bot) format these once; library code only raises them.
"""

from __future__ import annotations


class HubquantError(Exception):
    """Base class for errors that hubquant reports to users."""

    exit_code = 1


class UsageError(HubquantError):
    """Invalid user input: a target, an option or a source id."""

    exit_code = 2


class SourceError(HubquantError):
    """The source model cannot be used as it is (missing files, unsupported, unsafe)."""


class ResourceError(HubquantError):
    """Not enough disk space or memory for the planned work."""


class ToolchainError(HubquantError):
    """A backend toolchain failed to install or a step inside it failed."""


class ValidationFailed(HubquantError):
    """An artifact did not pass validation and was not published."""


class PublishError(HubquantError):
    """Publishing a release was refused or failed; nothing was half published."""


class TransientError(HubquantError):
    """A failure that may pass when retried (network, Hub 5xx, rate limit)."""
