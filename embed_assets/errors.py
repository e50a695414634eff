"""Exceptions raised by embed_assets.

Every error a user can trigger with bad input derives from :class:`EmbedAssetsError`,
so the CLI can print one line and exit non-zero without a traceback.
"""

from __future__ import annotations


class EmbedAssetsError(Exception):
    """Base class for errors caused by bad input or an impossible request."""


class ValidationError(EmbedAssetsError, ValueError):
    """Input data or arguments failed validation; nothing was written."""


class TableNotFoundError(EmbedAssetsError, LookupError):
    """The named table does not exist in the store."""


class VersionNotFoundError(EmbedAssetsError, LookupError):
    """The requested version or tag does not exist for the table."""


class SchemaMismatchError(ValidationError):
    """Data does not match the table: another model, dimension or key column."""
