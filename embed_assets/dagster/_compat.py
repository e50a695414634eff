"""The Dagster names this package needs that Dagster does not export publicly.

Everything else in ``embed_assets.dagster`` imports from ``dagster`` itself; a test
(``tests/test_dagster_compat.py``) checks that no other module reaches into
``dagster._...`` and that each name below is still the object Dagster uses, so an upgrade
that moves one fails there, naming it, instead of deep inside a run.

What stays private, and why:

- ``DbClient``, ``DbIOManager``, ``DbTypeHandler``, ``TableSlice``,
  ``TablePartitionDimension``: the database IO-manager framework. ``dagster`` (1.13) does
  not re-export any of them; its own integrations (dagster-duckdb, dagster-deltalake,
  dagster-gcp, ...) import them from ``dagster._core.storage.db_io_manager``, which makes
  that module the de facto extension point.
- ``DbIOManager._get_table_slice``: the only place that maps an asset key to a table. It
  is overridden once, in :class:`TableNamingDbIOManager`, which turns it into the
  :meth:`~TableNamingDbIOManager.rename_table_slice` hook the rest of the package uses.

Not private, so not here: ``TimeWindow`` (``from dagster import TimeWindow``); the table
metadata entries, written under Dagster's documented keys (``dagster/row_count``, ...) in
:mod:`.metadata` rather than through the unexported ``TableMetadataSet``; the instance
an IO manager tags runs with (``InitResourceContext.instance``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import dagster
from dagster import AssetKey, InputContext, OutputContext

# Not exported by `dagster`; dagster-duckdb and dagster-deltalake import them from here too.
try:
    from dagster._core.storage.db_io_manager import (
        DbClient,
        DbIOManager,
        DbTypeHandler,
        TablePartitionDimension,
        TableSlice,
    )
except ImportError as exc:  # pragma: no cover - only on a Dagster that moved them
    raise ImportError(
        f"embed_assets.dagster needs Dagster's DbIOManager family, which dagster "
        f"{dagster.__version__} no longer has in dagster._core.storage.db_io_manager ({exc}); "
        "update embed_assets/dagster/_compat.py"
    ) from exc

# Dagster's own alias (dagster._core.definitions.asset_key.CoercibleToAssetKey) is not
# exported; this is the same union, spelled out, so the factories' signatures need no
# private import.
CoercibleToAssetKey: TypeAlias = AssetKey | str | Sequence[str]


class TableNamingDbIOManager(DbIOManager):
    """``DbIOManager`` with a public hook for naming the table behind an input or output.

    ``DbIOManager`` builds a :class:`TableSlice` (``schema.table`` from the asset key) in its
    private ``_get_table_slice``, called by both ``handle_output`` and ``load_input``; this
    override is the only one in the package and hands the result to
    :meth:`rename_table_slice`.
    """

    def _get_table_slice(self, context: OutputContext | InputContext,
                         output_context: OutputContext) -> TableSlice:
        return self.rename_table_slice(context, output_context,
                                       super()._get_table_slice(context, output_context))

    def rename_table_slice(self, context: OutputContext | InputContext, output_context: OutputContext,
                           table_slice: TableSlice) -> TableSlice:
        """The slice to read or write; ``table_slice`` is Dagster's (default: unchanged)."""
        return table_slice


__all__ = [
    "CoercibleToAssetKey",
    "DbClient",
    "DbIOManager",
    "DbTypeHandler",
    "TableNamingDbIOManager",
    "TablePartitionDimension",
    "TableSlice",
]
