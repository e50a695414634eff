"""The ``embed-assets`` command line.

Every verb works on a store given by ``--store URI`` (default ``$EMBED_ASSETS_STORE``,
else ``./.embed_store``). Bad input exits non-zero with one line naming the problem.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from ._config import settings
from ._demo import run_demo
from .embed import default_embedder, embed_table
from .errors import EmbedAssetsError, ValidationError, first_line
from .index import build_index, freshness, refresh_index
from .sql import format_result, run_sql
from .store import DEFAULT_GRACE, Store, version_number

_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.ASCII)
_DUR_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> dt.timedelta:
    """'90s', '15m', '12h', '7d', '2w' -> timedelta."""
    m = _DUR_RE.match(text)
    if not m:
        raise ValidationError(f"bad duration {text!r}; use a number and a unit: 90s, 15m, 12h, 7d, 2w")
    return dt.timedelta(**{_DUR_UNITS[m.group(2)]: float(m.group(1))})


def _version_arg(v: str | None) -> int | str | None:
    if v is None:
        return None
    n = version_number(v)
    return v if n is None else n


def _print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, list):
            return ",".join(str(x) for x in v)
        s = "" if v is None else str(v)
        return s if len(s) <= 70 else s[:67] + "..."

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _dump(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _read_source(path: str) -> Any:
    import polars as pl

    if not os.path.exists(path):
        raise ValidationError(f"input file {path!r} does not exist")
    try:
        if path.endswith(".parquet"):
            return pl.read_parquet(path)
        if path.endswith(".csv"):
            return pl.read_csv(path)
    except Exception as exc:
        raise ValidationError(f"cannot read {path!r}: {first_line(exc)}") from None
    raise ValidationError(f"input file {path!r} must end in .parquet or .csv")


def _store(args: argparse.Namespace) -> Store:
    return Store(args.store)


# -- verbs -------------------------------------------------------------------------------
def cmd_embed(args: argparse.Namespace) -> int:
    data = _read_source(args.from_)
    partition = None
    if args.partition:
        if "=" not in args.partition:
            raise ValidationError("--partition must be COLUMN=VALUE")
        col, val = args.partition.split("=", 1)
        if col not in data.columns:
            raise ValidationError(f"partition column {col!r} not in {args.from_}")
        dtype = data[col].dtype
        partition = (col, int(val) if dtype.is_integer() else float(val) if dtype.is_float() else val)
    if args.mode == "replace_partition" and partition is None:
        raise ValidationError("--mode replace_partition needs --partition COLUMN=VALUE")
    columns = args.columns.split(",") if args.columns else None
    embedder = default_embedder(args.model, batch_size=args.batch_size)
    res = embed_table(
        _store(args), args.name, data, key=args.key, text=args.text, embedder=embedder,
        mode=args.mode, columns=columns, partition=partition,
        on_empty="skip" if args.skip_empty else "error", run_id=args.run_id,
    )
    if args.json:
        _dump(res.to_dict())
    else:
        print(res.summary())
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = []
    for name in store.table_names():
        t = store.table(name)
        m = t.meta
        rows.append({"name": name, "version": t.version, "rows": t.count_rows(),
                     "dimension": m.dimension, "model": m.model, "metric": m.metric,
                     "key": m.key, "tags": sorted(t.tags())})
    if args.json:
        _dump(rows)
    elif rows:
        _print_table(rows, ["name", "version", "rows", "dimension", "model", "tags"])
    else:
        print(f"no tables in {store.uri}")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    vs = [v.to_dict() for v in t.versions()]
    for v in vs:
        p = v["properties"]
        v["run_id"] = p.get("run_id")
        v["mode"] = p.get("mode") or p.get("operation")
        v["model"] = p.get("model")
    if args.json:
        _dump(vs)
    else:
        _print_table(vs, ["version", "timestamp", "rows", "tags", "mode", "run_id"])
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    v = t.tag(args.tag, _version_arg(args.version))
    print(f"tagged {args.name} version {v} as {args.tag!r}")
    return 0


def cmd_untag(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    v = t.untag(args.tag)
    print(f"removed tag {args.tag!r} (was version {v}) from {args.name}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    before = t.version
    target = t.resolve(_version_arg(args.to))
    new = t.rollback(target)
    if args.json:
        _dump({"table": args.name, "from": before, "to": target, "version": new})
    else:
        print(f"rolled back {args.name} to version {target}: new version {new} (was {before})")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    version = _version_arg(args.version)
    meta = t.meta_at(version)  # the version searched decides the model, not the latest
    res = t.search(args.text, k=args.k, where=args.where, version=version,
                   embedder=default_embedder(meta.model))
    cols = [meta.key, *([meta.text_column] if meta.text_column in res.column_names else []),
            "distance", "rank"]
    rows = res.select(cols).to_pylist()
    if args.json:
        _dump(rows)
    else:
        _print_table(rows, ["rank", meta.key, "distance",
                            *([meta.text_column] if meta.text_column in cols else [])])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    if not args.to.endswith(".parquet"):
        raise ValidationError(f"--to {args.to!r} must end in .parquet")
    t = _store(args).table(args.name)
    version = t.resolve(_version_arg(args.version))
    tbl = t.read(version)
    pq.write_table(tbl, args.to)
    print(f"exported {args.name} version {version}: {tbl.num_rows} rows to {args.to}")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    older = parse_duration(args.older_than) if args.older_than else None
    grace = parse_duration(args.grace) if args.grace else DEFAULT_GRACE
    rep = t.cleanup(keep_last=args.keep_last, older_than=older, grace=grace)
    if args.json:
        _dump(rep.to_dict())
    else:
        print(f"{args.name}: removed {len(rep.removed_versions)} version(s) "
              f"{rep.removed_versions}, freed {rep.bytes_freed} bytes in {rep.files_removed} "
              f"file(s) ({rep.orphan_files} orphaned by killed writes); kept {rep.kept_versions}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    if args.refresh:
        out = refresh_index(t)
        out["freshness"] = freshness(t)
        if args.json:
            _dump(out)
        else:
            print(f"{args.name}: {out['action']} ({out['reason']}); "
                  f"{out['freshness']['unindexed_rows']} row(s) unindexed")
        return 0
    rep = build_index(t, recall=args.recall, index_type=args.type, force_ann=args.force)
    if args.json:
        _dump(rep.to_dict())
    else:
        print(rep.summary())
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    print(format_result(run_sql(_store(args), args.query), as_json=args.json))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args.store)


# -- parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=argparse.SUPPRESS,
                        help="store URI (default: $EMBED_ASSETS_STORE or ./.embed_store)")
    p = argparse.ArgumentParser(prog="embed-assets", parents=[common],
                                description="A versioned embedding store on LanceDB.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, fn: Any, help: str, json_flag: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help, description=help)
        sp.set_defaults(fn=fn)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="print JSON")
        return sp

    sp = verb("embed", cmd_embed, "embed a table's text column into the store", True)
    sp.add_argument("name")
    sp.add_argument("--from", dest="from_", required=True, metavar="FILE",
                    help=".parquet or .csv file")
    sp.add_argument("--key", required=True)
    sp.add_argument("--text", required=True)
    sp.add_argument("--model", default=None,
                    help="sentence-transformers name or path (default all-MiniLM-L6-v2, offline)")
    sp.add_argument("--mode", default="upsert",
                    choices=["upsert", "overwrite", "append", "sync", "replace_partition"])
    sp.add_argument("--partition", default=None, metavar="COL=VALUE")
    sp.add_argument("--columns", default=None, help="comma-separated columns to keep")
    sp.add_argument("--skip-empty", action="store_true",
                    help="leave out rows with null/blank text instead of failing")
    sp.add_argument("--batch-size", type=int, default=64)
    sp.add_argument("--run-id", default=None)

    verb("tables", cmd_tables, "list tables", True)
    sp = verb("versions", cmd_versions, "list a table's versions", True)
    sp.add_argument("name")
    sp = verb("tag", cmd_tag, "tag a version (latest by default)")
    sp.add_argument("name")
    sp.add_argument("tag")
    sp.add_argument("--version", default=None)
    sp = verb("untag", cmd_untag, "remove a tag")
    sp.add_argument("name")
    sp.add_argument("tag")
    sp = verb("rollback", cmd_rollback, "make an old version (or tag) the latest", True)
    sp.add_argument("name")
    sp.add_argument("--to", required=True, metavar="N|TAG")
    sp = verb("search", cmd_search, "nearest neighbours of a text", True)
    sp.add_argument("name")
    sp.add_argument("text")
    sp.add_argument("-k", type=int, default=10)
    sp.add_argument("--version", default=None, metavar="N|TAG")
    sp.add_argument("--where", default=None, metavar="SQL")
    sp = verb("export", cmd_export, "write a version to Parquet")
    sp.add_argument("name")
    sp.add_argument("--to", required=True, metavar="FILE.parquet")
    sp.add_argument("--version", default=None, metavar="N|TAG")
    sp = verb("cleanup", cmd_cleanup, "delete old untagged versions", True)
    sp.add_argument("name")
    sp.add_argument("--keep-last", type=int, default=None)
    sp.add_argument("--older-than", default=None, metavar="DUR", help="e.g. 7d, 12h, 30m")
    sp.add_argument("--grace", default=None, metavar="DUR",
                    help="never remove a version superseded less than DUR ago, nor younger "
                         "files (default 1h; 0s for none)")
    sp = verb("index", cmd_index, "build a vector index tuned to a recall target", True)
    sp.add_argument("name")
    sp.add_argument("--recall", type=float, default=0.95, help="target recall@10 (default 0.95)")
    sp.add_argument("--type", default="IVF_PQ", choices=["IVF_PQ", "IVF_HNSW_SQ"])
    sp.add_argument("--force", action="store_true",
                    help="build an ANN index even below the exact-search threshold")
    sp.add_argument("--refresh", action="store_true",
                    help="fold unindexed rows in (or retrain when the data drifted)")
    sp = verb("sql", cmd_sql, 'run DuckDB SQL over the store (views NAME, "NAME@N", "NAME@TAG", '
              "vec_* macros, knn, similarity_join)", True)
    sp.add_argument("query")
    verb("demo", cmd_demo, "embed the shipped Debian slice, tag it and search it")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # An application may configure its process (the library never does): Lance logs "No
    # existing dataset ... will be created" at WARN for every new table, and the model's
    # weight-loading progress bar is noise on a terminal.
    os.environ.setdefault("LANCE_LOG", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "store"):
        args.store = None
    try:
        return int(args.fn(args) or 0)
    except EmbedAssetsError as exc:
        print(f"embed-assets: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("embed-assets: interrupted; nothing partial was committed", file=sys.stderr)
        return 130
    except Exception as exc:  # keep the promise of one line; full trace on request
        if settings().debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"embed-assets: error: {type(exc).__name__}: {msg} "
              "(set EMBED_ASSETS_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
