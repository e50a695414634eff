"""Write tests/data/clipart_slice.parquet: a small labelled slice of openclipart-png.

    apt-get install openclipart-png && python scripts/make_clipart_slice.py

Every category of benchmarks/clipart.py (its rule, its seeded split), ``--per-class``
pictures each, drawn by seed, each shrunk to fit ``--side`` pixels (aspect kept,
transparency kept) and re-encoded as an optimised PNG, so the file stays under 5 MB.
The pictures are public domain (Open Clip Art Library; /usr/share/doc/openclipart-png/copyright).
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import clipart  # noqa: E402

OUT = ROOT / "tests" / "data" / "clipart_slice.parquet"
# Pictures of things ImageNet has a class for, with that class (tests/test_efficientnet.py
# checks the preprocessing by their top-1): every openclipart file of these objects that
# is a single colour drawing of the object itself (no black-and-white outlines, no slices).
IMAGENET_CHECK = ROOT / "tests" / "data" / "imagenet_check.parquet"
CHECK = {
    "food/fruit/strawberry.png": 949, "food/fruit/strawberry_01.png": 949,
    "food/fruit/pineapple.png": 953, "food/fruit/banana.png": 954,
    "food/fruit/bananas_nicu_buculei_01.png": 954, "food/fruit/lemon.png": 951,
    "food/fruit/orange.png": 950, "food/fruit/orange_dave_pena_01.png": 950,
    "animals/bugs/ant.png": 310, "animals/bugs/ladybug_01.png": 301,
    "animals/bugs/ladybug_02.png": 301, "animals/bugs/bee.png": 309,
}


def thumbnail(path: str, side: int) -> bytes | None:
    Image.MAX_IMAGE_PIXELS = None  # trusted system files; a few are 10,000 x 16,000 renders
    im = Image.open(path)
    im.draft("RGB", (side, side))
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    if im.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        im = im.convert("RGBA")
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=15)
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = clipart.labelled()
    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_label[r["label"]].append(r)
    rng = random.Random(args.seed)
    out: dict[str, list] = {"key": [], "label": [], "split": [], "png": []}
    for label in sorted(by_label):
        group = by_label[label]
        test = [r for r in group if r["split"] == "test"]
        train = [r for r in group if r["split"] == "train"]
        n_test = max(2, round(args.per_class * 0.3))
        for r in rng.sample(test, n_test) + rng.sample(train, args.per_class - n_test):
            out["key"].append(r["key"])
            out["label"].append(label)
            out["split"].append(r["split"])
            out["png"].append(thumbnail(r["path"], args.side))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(out), OUT, compression="zstd")
    check = {"key": list(CHECK), "imagenet_class": list(CHECK.values()),
             "png": [thumbnail(str(clipart.ROOT / k), 256) for k in CHECK]}
    pq.write_table(pa.table(check), IMAGENET_CHECK, compression="zstd")
    print(f"{OUT}: {len(out['key'])} pictures, {len(by_label)} categories, "
          f"{OUT.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
