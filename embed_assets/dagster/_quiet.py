"""The one place Dagster's warnings about its own internals are silenced (issue 23.6)."""

from __future__ import annotations

import re
import warnings
from typing import Any, cast

# Dagster 1.13.27 warns about beta parameters it passes itself, not ones our code or the
# user's names: `execution_type` when it copies a checks definition that a component's
# metadata update turned into a plain AssetsDefinition (repository_data.py; every component
# with asset checks), `include_sources` when `dg launch --assets '*'` parses its own
# selection. Measured: each printed once per `dg launch` of the demo, nothing a user can act
# on. Only these two messages are silenced; any other BetaWarning still reaches the user.
_MESSAGE = (r"Parameter `(execution_type|include_sources)` of function "
            r"`(AssetsDefinition\.__init__|AssetSelection\.all)`")


def quiet_dagster_internal_warnings() -> None:
    """Install the filter in the current filter list and in the process's original one.

    Dagster imports a defs folder (and with it this package) inside its own
    ``warnings.catch_warnings()`` (``disable_dagster_warnings``, around
    ``load_from_defs_folder``); a filter added there alone is dropped when that block
    ends, before the warnings above are raised. ``_warnings.filters`` is the list
    ``catch_warnings`` restores at the outermost exit, so the filter is added to it too.
    """
    import _warnings

    from dagster import BetaWarning

    entry = ("ignore", re.compile(_MESSAGE, re.I), BetaWarning, None, 0)
    lists: tuple[list[Any], ...] = (cast(list[Any], warnings.filters), cast(list[Any], _warnings.filters))
    for filters in lists:
        if entry not in filters:
            filters.insert(0, entry)
    warnings._filters_mutated()  # type: ignore[attr-defined]  # the C cache of the filters
