"""The Dagster names embed_assets reaches for outside Dagster's public API.

``embed_assets/dagster/_compat.py`` holds every private Dagster import; these tests check
that each is still the object Dagster itself uses, with the parts the code relies on, so a
Dagster upgrade that moves or reshapes one fails here with the name in the message. And
that no other module of the integration (or the demo code location) imports ``dagster._``.
"""

import ast
import inspect
import typing
from pathlib import Path

import pytest
from dagster import AssetKey, IOManager, TableSchema, TimeWindow

from embed_assets.dagster import _compat

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "embed_assets" / "dagster", ROOT / "dagster_project"]
COMPAT = ROOT / "embed_assets" / "dagster" / "_compat.py"


def _moved(name: str, detail: str) -> str:
    return (f"Dagster moved or changed {name!r} (embed_assets/dagster/_compat.py): {detail}. "
            "Find its new home or public name and update _compat.py.")


def _private_dagster_imports(source: str, label: str) -> list[str]:
    """``label:line imports dagster._x`` for each import of a private Dagster module."""
    found = []
    for node in ast.walk(ast.parse(source, filename=label)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        found += [f"{label}:{node.lineno} imports {m}" for m in mods
                  if m.split(".")[0] == "dagster" and any(p.startswith("_") for p in m.split(".")[1:])]
    return found


def _scan(path: Path) -> list[str]:
    return _private_dagster_imports(path.read_text(), str(path.relative_to(ROOT)))


def test_only_the_compat_module_imports_private_dagster() -> None:
    files = [p for d in SCANNED for p in sorted(d.rglob("*.py"))]
    assert len(files) > 5, files  # the scan sees the package
    offenders = [hit for p in files if p != COMPAT for hit in _scan(p)]
    assert not offenders, "private Dagster imports outside _compat.py:\n" + "\n".join(offenders)
    assert _scan(COMPAT), "the scan no longer recognises _compat.py's imports"


def test_the_db_io_manager_family_is_what_dagster_uses() -> None:
    from dagster._core.storage import db_io_manager as dagster_db  # where Dagster keeps them

    for name in ("DbClient", "DbIOManager", "DbTypeHandler", "TableSlice", "TablePartitionDimension"):
        assert getattr(_compat, name) is getattr(dagster_db, name, None), _moved(
            name, "dagster._core.storage.db_io_manager no longer defines it")
    assert issubclass(_compat.DbIOManager, IOManager), _moved("DbIOManager", "not an IOManager")


def test_table_slice_has_the_fields_the_io_manager_reads() -> None:
    fields = getattr(_compat.TableSlice, "_fields", ())
    for f in ("table", "schema", "database", "columns", "partition_dimensions"):
        assert f in fields, _moved("TableSlice", f"no field {f!r} (fields: {fields})")
    ts = _compat.TableSlice(table="t", schema="s")
    assert ts._replace(table="u", schema="").table == "u", _moved("TableSlice", "no NamedTuple _replace")
    dim = _compat.TablePartitionDimension(partition_expr="day", partitions=["a"])
    assert (dim.partition_expr, list(dim.partitions)) == ("day", ["a"]), _moved(
        "TablePartitionDimension", "fields partition_expr, partitions changed")


def test_db_client_and_handler_keep_their_abstract_methods() -> None:
    client = {n for n in ("delete_table_slice", "get_select_statement", "get_table_name",
                          "ensure_schema_exists", "connect") if not hasattr(_compat.DbClient, n)}
    assert not client, _moved("DbClient", f"missing {sorted(client)}")
    handler = {n for n in ("handle_output", "load_input", "supported_types")
               if not hasattr(_compat.DbTypeHandler, n)}
    assert not handler, _moved("DbTypeHandler", f"missing {sorted(handler)}")
    init = set(inspect.signature(_compat.DbIOManager.__init__).parameters)
    want = {"type_handlers", "db_client", "database", "io_manager_name", "default_load_type"}
    assert want <= init, _moved("DbIOManager", f"__init__ lost {sorted(want - init)}")


def test_the_table_naming_hook_still_overrides_dagster() -> None:
    # TableNamingDbIOManager overrides DbIOManager._get_table_slice(context, output_context);
    # if Dagster renames it, the override is dead code and tables get Dagster's names.
    private = getattr(_compat.DbIOManager, "_get_table_slice", None)
    assert private is not None, _moved("DbIOManager._get_table_slice", "the method is gone")
    params = list(inspect.signature(private).parameters)
    assert params == ["self", "context", "output_context"], _moved(
        "DbIOManager._get_table_slice", f"parameters are now {params}")
    for caller in ("handle_output", "load_input"):
        src = inspect.getsource(getattr(_compat.DbIOManager, caller))
        assert "self._get_table_slice(" in src, _moved(
            "DbIOManager._get_table_slice", f"{caller} no longer calls it")


def test_coercible_to_asset_key_matches_dagsters_alias() -> None:
    from dagster._core.definitions import asset_key as dagster_asset_key

    theirs = getattr(dagster_asset_key, "CoercibleToAssetKey", None)
    assert theirs is not None, _moved("CoercibleToAssetKey", "dagster._core.definitions.asset_key "
                                      "has no such alias (the local one may be stale)")
    assert set(typing.get_args(_compat.CoercibleToAssetKey)) == set(typing.get_args(theirs)), _moved(
        "CoercibleToAssetKey", f"Dagster's alias is now {theirs}")
    for k in ("a", ["a", "b"], AssetKey(["a"])):
        assert AssetKey.from_coercible(k)


def test_public_names_used_instead_of_private_ones() -> None:
    from dagster._core.definitions.partitions import utils as partition_utils

    # `dagster.TimeWindow` is the class Dagster puts into TablePartitionDimension.
    assert TimeWindow is partition_utils.TimeWindow
    hints = typing.get_type_hints(_compat.TablePartitionDimension)
    assert TimeWindow in typing.get_args(hints["partitions"]), hints


def test_standard_table_keys_are_dagsters() -> None:
    # The metadata is written under Dagster's documented keys rather than through its
    # unexported TableMetadataSet; this checks the two agree.
    from dagster._core.definitions.metadata import TableMetadataSet

    from embed_assets.dagster.metadata import standard_table_metadata

    schema = TableSchema(columns=[])
    ours = standard_table_metadata(row_count=3, column_schema=schema, table_name="x/t.lance",
                                   partition_row_count=2)
    theirs = dict(TableMetadataSet(row_count=3, column_schema=schema, table_name="x/t.lance",
                                   partition_row_count=2))
    assert set(ours) == set(theirs)
    parsed = TableMetadataSet.extract(ours)
    assert (parsed.row_count, parsed.partition_row_count, parsed.table_name) == (3, 2, "x/t.lance")


@pytest.mark.parametrize("source, hits", [
    ("from dagster._core.x import y\n", 1),
    ("import dagster._check as check\n", 1),
    ("def f():\n    from dagster._config import z\n", 1),  # imports inside functions too
    ("from dagster import asset, TimeWindow\nimport dagster\n", 0),
    ("from dagster_shared import x\nfrom ._compat import TableSlice\n", 0),
])
def test_the_scan_catches_private_imports(source: str, hits: int) -> None:
    assert len(_private_dagster_imports(source, "m.py")) == hits
