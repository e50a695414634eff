"""Build the shipped Debian pairs slice: ``embed_assets/data/debian_pairs*.parquet``.

Reads the project's full package list (``/work/shared/data/debian_packages.parquet``,
63,666 Debian bookworm packages) and writes two small files that a fresh clone ships:

``debian_pairs.parquet``
    One row per package that appears in a sampled pair: ``package``, ``section``,
    ``description`` (the one-line synopsis), ``source``. Sorted by package.
``debian_pairs_index.parquet``
    One row per pair: ``kind`` (``"dev"`` or ``"doc"``), ``a``, ``b`` (package names),
    ``source``. Sorted by kind, then a.

Pairing rules (both packages of a pair always come from the same ``source``):

``dev``: a runtime library -> its development package.
    ``a`` is in section ``libs`` and its name does not end in ``-dev``; ``b`` ends in
    ``-dev``. With ``stem = b[:-len("-dev")]``, they match when ``a == stem``
    (``libxml2 -> libxml2-dev``, ``zlib1g -> zlib1g-dev``) or when ``a`` is ``stem``
    followed by a version suffix: an optional ``-`` or ``.`` then a digit, then only
    lowercase letters, digits, ``.``, ``+``, ``~`` and ``-`` (``libfoo1 -> libfoo-dev``,
    ``libgtk-3-0 -> libgtk-3-dev``, ``libboost-regex1.74.0 -> libboost-regex1.74-dev``;
    not ``libfoo-gtk1 -> libfoo-dev``). A source where any library matches more than one
    ``-dev`` package, or any ``-dev`` package more than one library, is ambiguous and
    skipped entirely.
``doc``: a package -> its documentation package.
    ``b == a + "-doc"``, and ``a`` does not end in ``-dev`` or ``-doc`` (``foo -> foo-doc``,
    ``libxml2 -> libxml2-doc``). The name of ``b`` determines ``a``, so these are never
    ambiguous.

Both packages need a non-blank description. At most one pair of each kind is taken per
source (chosen with the seed), so held-out pairs never share a source with training
pairs; then ``--n`` pairs of each kind (300 by default, fewer if fewer exist) are sampled
with the seed from the candidates sorted by source. A package may be in a ``dev`` and a
``doc`` pair (``libxml2``); it is written once.

Usage::

    .venv/bin/python scripts/make_pairs_slice.py            # seed 0, 300 pairs of each kind
    .venv/bin/python scripts/make_pairs_slice.py --seed 0 --n 300 --src PATH --out DIR
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl

SRC = Path("/work/shared/data/debian_packages.parquet")
OUT = Path(__file__).resolve().parents[1] / "embed_assets" / "data"
# What may follow the -dev package's stem in the library's name: a SONAME version.
VERSION_SUFFIX = re.compile(r"[-.]?[0-9][a-z0-9.+~-]*")


def dev_match(lib: str, dev: str) -> bool:
    """Whether ``dev`` (ending in ``-dev``) is the development package of library ``lib``."""
    stem = dev[: -len("-dev")]
    if lib == stem:
        return True
    return lib.startswith(stem) and VERSION_SUFFIX.fullmatch(lib[len(stem):]) is not None


def dev_pairs(df: pl.DataFrame) -> dict[str, list[tuple[str, str]]]:
    """Unambiguous (library, -dev) pairs, grouped by source."""
    libs: dict[str, list[str]] = defaultdict(list)
    devs: dict[str, list[str]] = defaultdict(list)
    for pkg, section, source in df.select("package", "section", "source").iter_rows():
        if pkg.endswith("-dev"):
            devs[source].append(pkg)
        elif section == "libs":
            libs[source].append(pkg)
    out: dict[str, list[tuple[str, str]]] = {}
    for source in sorted(set(libs) & set(devs)):
        matches = [(a, b) for a in libs[source] for b in devs[source] if dev_match(a, b)]
        if not matches:
            continue
        per_a = defaultdict(int)
        per_b = defaultdict(int)
        for a, b in matches:
            per_a[a] += 1
            per_b[b] += 1
        if max(per_a.values()) > 1 or max(per_b.values()) > 1:
            continue  # ambiguous source: skipped entirely
        out[source] = sorted(matches)
    return out


def doc_pairs(df: pl.DataFrame) -> dict[str, list[tuple[str, str]]]:
    """(package, package-doc) pairs of one source, grouped by source."""
    source_of = dict(df.select("package", "source").iter_rows())
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for b in sorted(source_of):
        if not b.endswith("-doc"):
            continue
        a = b[: -len("-doc")]
        if a.endswith(("-dev", "-doc")) or a not in source_of or source_of[a] != source_of[b]:
            continue
        out[source_of[b]].append((a, b))
    return dict(out)


def sample(by_source: dict[str, list[tuple[str, str]]], n: int,
           rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """One pair per source, then ``n`` sources: (a, b, source) triples."""
    one = [(*pairs[int(rng.integers(len(pairs)))], source)
           for source, pairs in sorted(by_source.items())]
    take = rng.choice(len(one), size=min(n, len(one)), replace=False)
    return sorted(one[i] for i in take)


def build(src: Path, n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    df = pl.read_parquet(src, columns=["package", "section", "description", "source"])
    df = df.filter(pl.col("description").is_not_null()
                   & (pl.col("description").str.strip_chars() != ""))
    rng = np.random.default_rng(seed)
    dev, doc = dev_pairs(df), doc_pairs(df)
    counts = {"dev_sources": len(dev), "doc_sources": len(doc)}
    rows = [("dev", a, b, s) for a, b, s in sample(dev, n, rng)]
    rows += [("doc", a, b, s) for a, b, s in sample(doc, n, rng)]
    index = pl.DataFrame(rows, schema=["kind", "a", "b", "source"], orient="row")
    names = set(index["a"]) | set(index["b"])
    packages = df.filter(pl.col("package").is_in(sorted(names))).sort("package")
    return packages, index.sort("kind", "a"), counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=SRC)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--n", type=int, default=300, help="pairs of each kind (default 300)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    packages, index, counts = build(args.src, args.n, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    packages.write_parquet(args.out / "debian_pairs.parquet", compression="zstd",
                           compression_level=19, statistics=False)
    index.write_parquet(args.out / "debian_pairs_index.parquet", compression="zstd",
                        compression_level=19, statistics=False)
    per_kind = dict(index.group_by("kind").len().sort("kind").iter_rows())
    print(f"candidate sources: dev {counts['dev_sources']}, doc {counts['doc_sources']}; "
          f"pairs: {per_kind}; packages: {packages.height}")
    for f in ("debian_pairs.parquet", "debian_pairs_index.parquet"):
        print(f"  {args.out / f}: {(args.out / f).stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
