"""The ``embed-assets`` command line.

Every verb works on a store given by ``--store URI`` (default ``$EMBED_ASSETS_STORE``,
else ``./.embed_store``). Bad input exits non-zero with one line naming the problem.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ._config import settings
from ._demo import run_demo
from ._version import __version__
from .embed import (
    DEFAULT_COMMIT_EVERY,
    Executor,
    InProcess,
    OnRay,
    SentenceTransformerEmbedder,
    Streamed,
    default_embedder,
    embed_table,
)
from .embed._images import IMAGE_HASH_COLUMN
from .errors import EmbedAssetsError, ValidationError, describe
from .index import build_index, build_text_index, freshness, rebuild_after_rollback, refresh_index
from .serve import _cli as serve_cli
from .sql import format_result, run_sql
from .store import DEFAULT_GRACE, Store, as_duration, is_local, local_path, version_number


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
        raise ValidationError(f"cannot read {path!r}: {describe(exc)}") from None
    raise ValidationError(f"input file {path!r} must end in .parquet or .csv")


def _partition_value(col: str, val: str, dtype: Any) -> Any:
    """``--partition COL=VALUE``'s value as the column's type (refused when it is not one)."""
    try:
        if dtype.is_integer():
            return int(val)
        if dtype.is_float():
            return float(val)
    except ValueError:
        raise ValidationError(f"--partition {col}={val}: column {col!r} holds {dtype} values; "
                              f"{val!r} is not one") from None
    return val


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {n}")
    return n


class _Announcing:
    """Wraps a sentence-transformers embedder to say on stderr, once, that its model is
    being loaded (the first load takes seconds) just before it is."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        return str(self.inner.name)

    def embed(self, texts: Sequence[str]) -> Any:
        if getattr(self.inner, "_model", None) is None:
            print(f"loading model {self.inner.name}...", file=sys.stderr, flush=True)
        return self.inner.embed(texts)


# Verbs that create what they write; every other verb reads a store that must exist, so
# a mistyped --store is named instead of answered with "no tables".
_CREATING_VERBS = frozenset({"embed", "embed-images", "demo"})


def _store(args: argparse.Namespace) -> Store:
    store = Store(args.store, index_keeper=rebuild_after_rollback)
    if args.verb not in _CREATING_VERBS and is_local(store.uri):
        path = local_path(store.uri)
        if not os.path.isdir(path):
            raise ValidationError(f"store {path!r} does not exist (check --store or "
                                  "$EMBED_ASSETS_STORE; embed creates a store)")
    return store


# -- verbs -------------------------------------------------------------------------------
def cmd_embed(args: argparse.Namespace) -> int:
    # A Parquet file is streamed (bounded memory, a commit every --commit-every rows, a
    # rerun resumes); a partitioned write or a CSV is read whole.
    stream = args.from_.endswith(".parquet") and not args.partition \
        and args.mode != "replace_partition" and not args.ray
    if args.ray and args.commit_every:
        raise ValidationError("--commit-every streams in this process; a --ray run is one "
                              "commit of the workers' fragments: drop one of the two")
    if stream and not os.path.exists(args.from_):
        raise ValidationError(f"input file {args.from_!r} does not exist")
    data: Any = args.from_ if stream else _read_source(args.from_)
    partition = None
    if args.partition:
        if "=" not in args.partition:
            raise ValidationError("--partition must be COLUMN=VALUE")
        col, val = args.partition.split("=", 1)
        if col not in data.columns:
            raise ValidationError(f"partition column {col!r} not in {args.from_}")
        partition = (col, _partition_value(col, val, data[col].dtype))
    if args.mode == "replace_partition" and partition is None:
        raise ValidationError("--mode replace_partition needs --partition COLUMN=VALUE")
    columns = args.columns.split(",") if args.columns else None
    embedder = default_embedder(args.model, backend=args.backend, batch_size=args.batch_size)
    res = embed_table(
        _store(args), args.name, data, key=args.key, text=args.text, embedder=embedder,
        mode=args.mode, columns=columns, partition=partition,
        on_empty="skip" if args.skip_empty else "error", run_id=args.run_id,
        executor=_executor(args, stream),
    )
    if args.json:
        _dump(res.to_dict())
    else:
        print(res.summary())
    return 0


def _executor(args: argparse.Namespace, stream: bool) -> Executor:
    """The options of ``embed`` as the executor that runs it."""
    if args.ray:
        return OnRay(args.ray, rows_per_task=args.ray_rows_per_task, max_retries=args.ray_retries)
    if stream or args.commit_every:
        return Streamed(args.commit_every or DEFAULT_COMMIT_EVERY,
                        progress=False if args.no_progress else None)
    return InProcess()


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
    vs = [v.to_dict() for v in t.versions(include_maintenance=args.all)]
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
    if args.json:
        _dump({"table": args.name, "tag": args.tag, "version": v, "action": "tagged"})
    else:
        print(f"tagged {args.name} version {v} as {args.tag!r}")
    return 0


def cmd_untag(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    v = t.untag(args.tag)
    if args.json:
        _dump({"table": args.name, "tag": args.tag, "version": v, "action": "untagged"})
    else:
        print(f"removed tag {args.tag!r} (was version {v}) from {args.name}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    before = t.version
    target = t.resolve(_version_arg(args.to))
    new = t.rollback(target)
    if args.json:
        _dump({"table": args.name, "from": before, "to": target, "version": new})
    elif new == before:
        print(f"{args.name} already holds version {target}'s rows at version {new}: "
              "nothing to roll back, no version written")
    else:
        print(f"rolled back {args.name} to version {target}: new version {new} (was {before})")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    version = _version_arg(args.version)
    meta = t.meta_at(version)  # the version searched decides the model, not the latest
    if meta.text_column == IMAGE_HASH_COLUMN and args.mode != "text":
        # its model is an image model: loading it as a text model went looking for it on
        # the Hugging Face hub (15 s, then a misleading error)
        raise ValidationError(f"table {args.name!r} holds image embeddings ({meta.model}); "
                              f"search it by image: embed-assets search-image {args.name} "
                              "PATH|KEY")
    embedder: Any = None
    if args.mode != "text":
        embedder = default_embedder(meta.model)
        if isinstance(embedder, SentenceTransformerEmbedder):
            embedder = _Announcing(embedder)
    partition: Any = None
    if args.partition is not None:
        col, sep, val = args.partition.partition("=")
        partition = (col, val) if sep else args.partition
    res, plan = t.search(args.text, k=args.k, where=args.where, version=version, embedder=embedder,
                         mode=args.mode, partition=partition, explain=True)
    scores = [c for c in ("distance", "text_score", "score") if c in res.column_names]
    cols = [meta.key, *([meta.text_column] if meta.text_column in res.column_names else []),
            *scores, "rank"]
    rows = res.select(cols).to_pylist()
    if args.json:
        _dump({"rows": rows, "plan": plan.to_dict()} if args.explain else rows)
    else:
        if args.explain:
            print(f"plan: {plan}")
        _print_table(rows, ["rank", meta.key, *scores,
                            *([meta.text_column] if meta.text_column and meta.text_column in cols
                              else [])])
    return 0


def cmd_embed_images(args: argparse.Namespace) -> int:
    from .embed import EfficientNetEmbedder, ImageLimits, embed_images
    from .embed._image_io import image_source

    data, key, image = image_source(args.source, column=args.column, key=args.key,
                                    store_bytes=args.store_bytes)
    limits = ImageLimits(**({"max_pixels": args.max_pixels} if args.max_pixels else {}))
    emb = EfficientNetEmbedder(backend=args.backend, batch_size=args.batch_size,
                               show_progress=False if args.no_progress else None)
    try:
        res = embed_images(_store(args), args.name, data, key=key, image=image, embedder=emb,
                           mode=args.mode, on_bad="skip" if args.skip_bad else "error",
                           run_id=args.run_id, limits=limits)
    except ValidationError as exc:  # the library's advice in this command's words
        raise ValidationError(str(exc).replace("pass on_bad='skip'", "pass --skip-bad")) from None
    if args.json:
        _dump({**res.to_dict(), "bad_images": [[k, why] for k, why in res.bad_images]})
    else:
        print(res.summary())
        for k, why in res.bad_images:
            print(f"  skipped {k}: {why}")
    return 0


def cmd_search_image(args: argparse.Namespace) -> int:
    from .embed._image_io import neighbours_png, search_by_image, stored_value

    t = _store(args).table(args.name)
    version = _version_arg(args.version)
    meta = t.meta_at(version)
    try:
        hits, raw = search_by_image(t, args.query, k=args.k, version=version, where=args.where,
                                    by_key=True if args.key else None)
    except ValidationError as exc:  # the library's advice in this command's words
        raise ValidationError(str(exc).replace(
            "pass that model as embedder= (or search by a stored key)",
            "the command line embeds a query image with the default image model only: search by "
            "a stored key (--key)")) from None
    extra = [c for c in (args.label,) if c and c in hits.column_names]
    rows = hits.select([meta.key, *extra, "distance", "rank"]).to_pylist()
    if args.png:
        is_key = args.key or not os.path.isfile(args.query)
        want = stored_value(t, args.query, args.label, version) if args.label and is_key else None
        with open(args.png, "wb") as fh:
            fh.write(neighbours_png(t, hits, raw, version=version, label=args.label, query_label=want))
    if args.json:
        _dump({"rows": rows, "png": args.png} if args.png else rows)
    else:
        _print_table(rows, ["rank", meta.key, "distance", *extra])
        if args.png:
            print(f"wrote {args.png}: the query, then its {len(rows)} neighbours")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    if not args.to.endswith(".parquet"):
        raise ValidationError(f"--to {args.to!r} must end in .parquet")
    folder = os.path.dirname(os.path.abspath(args.to))
    if not os.path.isdir(folder):
        raise ValidationError(f"--to {args.to!r}: directory {folder!r} does not exist")
    if os.path.isdir(args.to):
        raise ValidationError(f"--to {args.to!r} is a directory")
    t = _store(args).table(args.name)
    ref = _version_arg(args.version)
    ds = t.dataset(ref)  # a production version, or an experiment's
    branch = getattr(ds, "_ea_branch", None)
    version: int | str = ds.version if branch is None else f"{branch}:{ds.version}"
    tbl = t.read(ref if branch is None else (branch, ds.version))
    try:
        pq.write_table(tbl, args.to)
    except OSError as exc:
        raise ValidationError(f"cannot write {args.to!r}: {describe(exc)}") from None
    if args.json:
        _dump({"table": args.name, "version": version, "rows": tbl.num_rows, "to": args.to})
    else:
        print(f"exported {args.name} version {version}: {tbl.num_rows} rows to {args.to}")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    older = as_duration(args.older_than, "--older-than") if args.older_than else None
    grace = as_duration(args.grace, "--grace") if args.grace else DEFAULT_GRACE
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
    if args.text:
        got = build_text_index(t)
        if args.json:
            _dump(got)
        else:
            print(f"{args.name}: full-text index on {', '.join(got['columns'])} "
                  f"(version {got['version']})")
        return 0
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


def cmd_snapshot(args: argparse.Namespace) -> int:
    from .train import cleanup_snapshots, snapshot

    cols = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    t = _store(args).table(args.name)
    snap = snapshot(t, _version_arg(args.version), columns=cols, cache_dir=args.dir)
    out = snap.to_dict()
    if args.keep_last is not None:
        out["removed"] = cleanup_snapshots(args.dir, keep_last=args.keep_last, table=args.name)
    if args.json:
        _dump(out)
    else:
        print(f"{'reused' if snap.reused else 'exported'} {args.name} version {snap.version}: "
              f"{snap.rows} x {snap.dimension} float32 at {snap.path}")
    return 0


def _experiment_embedder(model: str | None, backend: str | None) -> Any:
    emb = default_embedder(model, backend=backend)
    return _Announcing(emb) if isinstance(emb, SentenceTransformerEmbedder) else emb


def cmd_experiment(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    if args.experiment is None:  # list them
        rows = [e.to_dict() for e in t.experiments()]
        if args.json:
            _dump(rows)
        elif rows:
            _print_table(rows, ["name", "version", "base_version", "model", "dimension", "rows"])
        else:
            print(f"{args.name} has no experiments")
        return 0
    if not args.model:
        raise ValidationError("experiment needs --model (the model to try), e.g. --model hash-bow:64")
    res = t.experiment(args.experiment, embedder=_experiment_embedder(args.model, args.backend),
                       metric=args.metric, batch_size=args.batch_size, run_id=args.run_id)
    if args.json:
        _dump(res.to_dict())
    else:
        print(res.summary())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    cmp = t.compare(args.experiment, production=_version_arg(args.version), sample=args.sample,
                    k=args.k, label_column=args.label, seed=args.seed)
    if args.json:
        _dump({**cmp.figures(), "table": args.name, "experiment": args.experiment,
               "production_model": cmp.production_model, "experiment_model": cmp.experiment_model})
    else:
        print(cmp.summary())
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    embedder = None
    if args.resync:
        embedder = _experiment_embedder(t.experiment_info(args.experiment).model, None)
    res = t.promote(args.experiment, resync=args.resync, embedder=embedder, run_id=args.run_id)
    if args.json:
        _dump(res.to_dict())
    else:
        print(res.summary())
    return 0


def cmd_discard(args: argparse.Namespace) -> int:
    t = _store(args).table(args.name)
    t.discard(args.experiment, grace=0 if args.now else None)
    if args.json:
        _dump({"table": args.name, "experiment": args.experiment, "action": "discarded",
               "files_deleted": bool(args.now)})
    elif args.now:
        print(f"discarded experiment {args.experiment!r} of {args.name} and deleted its files")
    else:
        print(f"discarded experiment {args.experiment!r} of {args.name}; `cleanup` deletes its "
              "files once the grace period (default 1h) has passed")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    print(format_result(run_sql(_store(args), args.query), as_json=args.json))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args.store)


# -- parser ------------------------------------------------------------------------------
EXIT_CODES = """exit codes:
  0    success
  2    bad input or an impossible request (bad arguments, a missing table, version or
       tag, data the store refuses, a failed SQL statement); a refused input
       changes nothing stored
  1    an unexpected error (set EMBED_ASSETS_DEBUG=1 for a traceback)
  130  interrupted (Ctrl-C); no commit is left half-done (a streamed embed keeps its
       committed groups: rerun it to resume)"""

EXAMPLES: dict[str, str] = {
    "embed": "embed-assets embed pkgs --from pkgs.parquet --key package --text description\n"
             "  embed-assets embed pkgs --from new.csv --key package --text description "
             "--mode sync --json\n"
             "  embed-assets embed pkgs --from admin.parquet --key package --text description "
             "--mode replace_partition --partition section=admin\n"
             "  embed-assets embed pkgs --from pkgs.parquet --key package --text description "
             "--ray 127.0.0.1:6379",
    "tables": "embed-assets tables --json",
    "versions": "embed-assets versions pkgs",
    "tag": "embed-assets tag pkgs prod --version 3",
    "untag": "embed-assets untag pkgs prod",
    "rollback": "embed-assets rollback pkgs --to prod",
    "search": "embed-assets search pkgs \"a text editor\" -k 5 --where \"section = 'editors'\"\n"
              "  embed-assets search pkgs libxml2 --mode hybrid --explain",
    "export": "embed-assets export pkgs --to pkgs-prod.parquet --version prod",
    "embed-images": "embed-assets embed-images pics ./photos\n"
                    "  embed-assets embed-images pics 'shop/**/*.jpg' --store-bytes --skip-bad\n"
                    "  embed-assets embed-images pics items.parquet --column image --key sku",
    "search-image": "embed-assets search-image pics query.jpg -k 8 --png neighbours.png\n"
                    "  embed-assets search-image pics animals/cat.png --key -k 5",
    "cleanup": "embed-assets cleanup pkgs --keep-last 5 --older-than 7d --json",
    "index": "embed-assets index pkgs --recall 0.95\n  embed-assets index pkgs --refresh\n"
             "  embed-assets index pkgs --text",
    "sql": "embed-assets sql \"SELECT package, distance FROM knn('pkgs', "
           "(SELECT vector FROM pkgs LIMIT 1), 3)\"",
    "demo": "embed-assets --store /tmp/demo demo",
    "experiment": "embed-assets experiment pkgs int8 --model all-MiniLM-L6-v2 --backend onnx-int8\n"
                  "  embed-assets experiment pkgs --json",
    "compare": "embed-assets compare pkgs int8 --label section --sample 500",
    "promote": "embed-assets promote pkgs int8\n  embed-assets promote pkgs int8 --resync",
    "discard": "embed-assets discard pkgs int8",
    "snapshot": "embed-assets snapshot pkgs --version prod --columns section --json",
    "serve": serve_cli.EXAMPLE,
}


class _Parser(argparse.ArgumentParser):
    """Argument errors in one line (and exit 2), like every other refused input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--store", default=argparse.SUPPRESS,
                        help="store URI (default: $EMBED_ASSETS_STORE or ./.embed_store)")
    p = _Parser(prog="embed-assets", parents=[common],
                description="A versioned embedding store on LanceDB.",
                epilog="example:\n  " + EXAMPLES["embed"].split("\n")[0] + "\n\n" + EXIT_CODES,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    # Only on the top level: the verbs' own --version names a table version.
    p.add_argument("--version", action="version", version=f"embed-assets {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=_Parser,
                           help="the command; embed-assets VERB --help shows its options")

    def verb(name: str, fn: Any, help: str, json_help: str | None = None) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help, description=help,
                            epilog=f"example:\n  {EXAMPLES[name]}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(fn=fn)
        if json_help:
            sp.add_argument("--json", action="store_true", help=json_help)
        return sp

    sp = verb("embed", cmd_embed, "embed a table's text column into the store",
              "print what was written as JSON")
    sp.add_argument("name", help="the store table to write")
    sp.add_argument("--from", dest="from_", required=True, metavar="FILE",
                    help=".parquet or .csv file")
    sp.add_argument("--key", required=True, help="column with a unique key per row")
    sp.add_argument("--text", required=True, help="column with the text to embed")
    sp.add_argument("--model", default=None,
                    help="sentence-transformers name or path (default all-MiniLM-L6-v2, "
                         "offline), or hash-bow[:DIM] for the weightless hashing embedder")
    sp.add_argument("--mode", default="upsert",
                    choices=["upsert", "overwrite", "append", "sync", "replace_partition"],
                    help="upsert (default) adds and updates; sync also deletes keys missing "
                         "from FILE; overwrite re-embeds all; append adds new keys only; "
                         "replace_partition syncs the --partition rows only")
    sp.add_argument("--partition", default=None, metavar="COL=VALUE",
                    help="the partition replace_partition writes, e.g. section=admin")
    sp.add_argument("--columns", default=None, help="comma-separated columns to keep")
    sp.add_argument("--skip-empty", action="store_true",
                    help="leave out rows with null/blank text instead of failing")
    sp.add_argument("--batch-size", type=_positive_int, default=64,
                    help="texts per model forward pass (default 64)")
    sp.add_argument("--run-id", default=None,
                    help="recorded on the version written (default: a fresh manual-... id)")
    sp.add_argument("--backend", default=None, metavar="B",
                    help="how the model runs: torch (default, PyTorch fp32), onnx (ONNX Runtime "
                         "fp32), onnx-int8 (dynamic int8, about 2x faster on a CPU), openvino "
                         "(fp32) or openvino-bf16 (bf16 on AMX CPUs, the fastest here); the "
                         "backend is part of the table's model, so switching needs --mode overwrite")
    sp.add_argument("--commit-every", type=_positive_int, default=None, metavar="N",
                    help="commit every N rows so an interrupted run resumes (default for a "
                         ".parquet FILE: 50000, which is streamed in bounded memory)")
    sp.add_argument("--no-progress", action="store_true",
                    help="no progress bar (shown on a terminal: rows/s and ETA)")
    sp.add_argument("--ray", default=None, metavar="ADDRESS",
                    help="embed on a Ray cluster: auto, HOST:PORT (ray start --head prints it), "
                         "ray://HOST:PORT, or local:N (a local cluster of N CPUs for this run); "
                         "workers write fragments, committed as one version (needs the ray extra)")
    sp.add_argument("--ray-retries", type=int, default=3, metavar="N",
                    help="with --ray: retries of a failed task before the run fails and "
                         "commits nothing (default 3)")
    sp.add_argument("--ray-rows-per-task", type=_positive_int, default=None, metavar="N",
                    help="with --ray: rows per task (default: about 4 tasks per worker)")

    verb("tables", cmd_tables, "list tables", "print the tables as JSON")
    sp = verb("versions", cmd_versions, "list a table's versions", "print the versions as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("--all", action="store_true",
                    help="also list index/config bookkeeping versions (CreateIndex, UpdateConfig, "
                         "index records)")
    sp = verb("tag", cmd_tag, "tag a version (latest by default)", "print what was tagged as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("tag", help="the tag to create (letters, digits, . _ -)")
    sp.add_argument("--version", default=None, metavar="N|TAG",
                    help="the version to tag (default: the latest)")
    sp = verb("untag", cmd_untag, "remove a tag", "print what was removed as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("tag", help="the tag to remove")
    sp = verb("rollback", cmd_rollback, "make an old version (or tag) the latest",
              "print the versions before and after as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("--to", required=True, metavar="N|TAG",
                    help="the version number or tag to restore as a new latest version")
    sp = verb("search", cmd_search, "nearest neighbours of a text", "print the hits as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("text", help="the query text (embedded with the table's model)")
    sp.add_argument("-k", type=_positive_int, default=10, help="how many hits (default 10)")
    sp.add_argument("--version", default=None, metavar="N|TAG",
                    help="search this version or tag (default: the latest)")
    sp.add_argument("--where", default=None, metavar="SQL",
                    help="filter rows first, e.g. \"section = 'admin'\"")
    sp.add_argument("--partition", default=None, metavar="VALUE|COLUMN=VALUE",
                    help="search one partition (the table's recorded partition column, or COLUMN=VALUE)")
    sp.add_argument("--mode", default="vector", choices=["vector", "text", "hybrid"],
                    help="vector (default), text (BM25 over the full-text index: `index --text`) "
                         "or hybrid (both, fused by reciprocal rank)")
    sp.add_argument("--explain", action="store_true",
                    help="say which search plan ran and why (with --json: {rows, plan})")
    sp = verb("embed-images", cmd_embed_images, "embed images (a folder, a glob, or a Parquet/Arrow "
              "column of paths or bytes) with EfficientNet-Lite0", "print what was written as JSON")
    sp.add_argument("name", help="the store table to write")
    sp.add_argument("source", help="a folder, a glob such as 'photos/**/*.jpg', or a .parquet/.arrow file")
    sp.add_argument("--column", default=None, help="for a Parquet/Arrow file: the column of paths or bytes")
    sp.add_argument("--key", default=None,
                    help="for a Parquet/Arrow file: the key column (folders and globs are keyed by path)")
    sp.add_argument("--store-bytes", action="store_true",
                    help="keep the image bytes in the table (Lance blob encoding) instead of the "
                         "path; bytes from a Parquet/Arrow column are always kept so")
    sp.add_argument("--skip-bad", action="store_true",
                    help="leave out (and list) images that cannot be used instead of failing")
    sp.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                    help="refuse images above N pixels (default 89,478,485, Pillow's bomb limit)")
    sp.add_argument("--mode", default="upsert", choices=["upsert", "overwrite", "append", "sync"],
                    help="upsert (default), overwrite, append or sync, as for embed")
    sp.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx", "openvino"],
                    help="how the network runs: auto (default: openvino, else onnx, else torch, "
                         "whichever is installed first), torch, onnx or openvino (all fp32, the "
                         "same vectors)")
    sp.add_argument("--batch-size", type=_positive_int, default=32,
                    help="images per forward pass (default 32)")
    sp.add_argument("--run-id", default=None, help="recorded on the version written")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp = verb("search-image", cmd_search_image, "nearest stored images of an image file or a stored key",
              "print the hits as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("query", help="an image file, or the key of a stored row")
    sp.add_argument("-k", type=_positive_int, default=10, help="how many hits (default 10)")
    sp.add_argument("--key", action="store_true", help="QUERY is a stored key even if a file has that name")
    sp.add_argument("--png", default=None, metavar="FILE.png",
                    help="write a picture of the query and its neighbours")
    sp.add_argument("--label", default=None, metavar="COL",
                    help="show this stored column; in the picture a neighbour with the query's "
                         "value is framed green, another red")
    sp.add_argument("--version", default=None, metavar="N|TAG",
                    help="search this version or tag (default: the latest)")
    sp.add_argument("--where", default=None, metavar="SQL", help="filter rows first")
    sp = verb("export", cmd_export, "write a version to Parquet", "print what was written as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("--to", required=True, metavar="FILE.parquet",
                    help="the Parquet file to write (its directory must exist)")
    sp.add_argument("--version", default=None, metavar="N|TAG",
                    help="the version or tag to export (default: the latest)")
    sp = verb("cleanup", cmd_cleanup, "delete old untagged versions",
              "print what was removed as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("--keep-last", type=_positive_int, default=None, metavar="N",
                    help="keep the N latest versions")
    sp.add_argument("--older-than", default=None, metavar="DUR",
                    help="remove only versions older than DUR, e.g. 7d, 12h, 30m")
    sp.add_argument("--grace", default=None, metavar="DUR",
                    help="never remove a version superseded less than DUR ago (default 1h); "
                         "0s also removes unreferenced files at once: no write may be running")
    sp = verb("index", cmd_index, "build a vector index tuned to a recall target",
              "print the index report as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("--recall", type=float, default=0.95, help="target recall@10 (default 0.95)")
    sp.add_argument("--type", default="IVF_PQ", choices=["IVF_PQ", "IVF_HNSW_SQ"],
                    help="the ANN index type (default IVF_PQ)")
    sp.add_argument("--force", action="store_true",
                    help="build an ANN index even below the exact-search threshold")
    sp.add_argument("--refresh", action="store_true",
                    help="fold unindexed rows in (or retrain when the data drifted)")
    sp.add_argument("--text", action="store_true",
                    help="build the full-text (BM25) index of the text column and a string key "
                         "instead, for search --mode text|hybrid")
    sp = verb("sql", cmd_sql, 'run DuckDB SQL over the store (views NAME, "NAME@N", "NAME@TAG", '
              "vec_* macros, knn, similarity_join)", "print the result rows as JSON")
    sp.add_argument("query", help="one or more SQL statements; the last one's result is printed")
    sp = verb("snapshot", cmd_snapshot, "export a version to the local training-snapshot cache "
              "(a memory-mapped float32 matrix; reused while it is intact)",
              "print the snapshot (path, version, rows, reused) as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("--version", default=None, metavar="N|TAG",
                    help="the version or tag to snapshot (default: the latest)")
    sp.add_argument("--columns", default=None, help="comma-separated columns to keep beside key and vector")
    sp.add_argument("--dir", default=None, metavar="DIR",
                    help="the snapshot cache (default $EMBED_ASSETS_SNAPSHOT_DIR or "
                         "~/.cache/embed_assets/snapshots)")
    sp.add_argument("--keep-last", type=_positive_int, default=None, metavar="N",
                    help="then delete this table's snapshots beyond the N most recently used")
    sp = verb("experiment", cmd_experiment, "try a model on a branch of a table (production "
              "untouched); without EXP, list the table's experiments", "print the result as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("experiment", nargs="?", default=None, metavar="EXP",
                    help="the experiment's name (read it as --version EXP or EXP:N, SQL \"NAME@EXP\")")
    sp.add_argument("--model", default=None,
                    help="the model to try: a sentence-transformers name or path, or hash-bow[:DIM]")
    sp.add_argument("--backend", default=None, metavar="B",
                    help="how the model runs (torch, onnx, onnx-int8, openvino...), as for embed")
    sp.add_argument("--metric", default=None, choices=["cosine", "dot", "l2"],
                    help="the experiment's distance metric (default production's)")
    sp.add_argument("--batch-size", type=_positive_int, default=256,
                    help="texts per model call (default 256)")
    sp.add_argument("--run-id", default=None, help="recorded on the experiment's version")
    sp = verb("compare", cmd_compare, "compare an experiment with production on the table's own rows",
              "print the figures as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("experiment", metavar="EXP", help="the experiment")
    sp.add_argument("--version", default=None, metavar="N|TAG",
                    help="the production version to compare with (default: the latest)")
    sp.add_argument("--sample", type=_positive_int, default=200,
                    help="rows used as queries (default 200)")
    sp.add_argument("-k", type=_positive_int, default=10, help="neighbours per query (default 10)")
    sp.add_argument("--label", default=None, metavar="COL",
                    help="also report the share of the top-k with the query row's COL value "
                         "(e.g. section)")
    sp.add_argument("--seed", type=int, default=0, help="the sample's random seed (default 0)")
    sp = verb("promote", cmd_promote, "make an experiment production's next version (one commit, "
              "no model call; rollback undoes it)", "print what was committed as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("experiment", metavar="EXP", help="the experiment")
    sp.add_argument("--resync", action="store_true",
                    help="if production changed since the experiment's base, re-embed the changed "
                         "rows with the experiment's model first (else the promotion is refused)")
    sp.add_argument("--run-id", default=None, help="recorded on the version written")
    sp = verb("discard", cmd_discard, "throw an experiment away", "print what was done as JSON")
    sp.add_argument("name", help="the table")
    sp.add_argument("experiment", metavar="EXP", help="the experiment")
    sp.add_argument("--now", action="store_true",
                    help="delete its files now rather than at the next cleanup after the grace "
                         "period (no reader may be using it)")
    verb("demo", cmd_demo, "embed the shipped Debian slice, tag it and search it")
    serve_cli.add_arguments(verb("serve", serve_cli.command, "serve tables over HTTP, pinned to a tag "
                                 "and following it (read-only; needs the serve extra)"))
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
        print(f"embed-assets: error: {describe(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`embed-assets tables | head`): what it read is all it
        # wanted. Point stdout at /dev/null so the interpreter's final flush is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("embed-assets: interrupted; no commit was left half-done (a streamed embed "
              "keeps the groups it committed: rerun it to resume)", file=sys.stderr)
        return 130
    except Exception as exc:  # keep the promise of one line; full trace on request
        if settings().debug:
            raise
        print(f"embed-assets: error: {type(exc).__name__}: {describe(exc)} "
              "(set EMBED_ASSETS_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
