"""Labelled real pictures: Debian's openclipart-png (Open Clip Art Library, public domain).

``apt-get install openclipart-png`` puts about 8,100 PNGs under
/usr/share/openclipart/png/<category>/<subcategory>/. The label of a picture is its
leaf folder (``animals/birds``, ``food/fruit``, ``transportation/roadsigns``...), the
finest filing its authors chose. The rule, fixed before any model ran:

- only pictures inside a subcategory folder (``food/x.png`` has no leaf label);
- byte-identical files are one picture; one filed under two labels is dropped;
- leaf folders with at least ``min_per_class`` distinct pictures are the classes;
- at most ``max_per_class`` per class (a seeded sample: ``computer/icons`` alone has
  1,853 and ``shapes/stars`` 1,378, which would otherwise dominate the score);
- a seeded stratified split, ``test_share`` of each class held out.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from pathlib import Path

ROOT = Path("/usr/share/openclipart/png")


def available(root: Path = ROOT) -> bool:
    return root.is_dir()


def labelled(root: Path = ROOT, *, min_per_class: int = 40, max_per_class: int = 100,
             test_share: float = 0.3, seed: int = 0) -> list[dict]:
    """Rows ``{"key", "path", "label", "split"}`` by the rule in the module notes."""
    by_hash: dict[str, tuple[str, Path]] = {}
    labels_of: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.glob("*/*/**/*.png")):
        rel = path.relative_to(root)
        label = "/".join(rel.parts[:2])
        h = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
        labels_of[h].add(label)
        by_hash.setdefault(h, (label, path))
    per: dict[str, list[Path]] = defaultdict(list)
    for h, (label, path) in by_hash.items():
        if len(labels_of[h]) == 1:
            per[label].append(path)
    rng = random.Random(seed)
    rows = []
    for label in sorted(per):
        paths = sorted(per[label])
        if len(paths) < min_per_class:
            continue
        rng.shuffle(paths)
        paths = sorted(paths[:max_per_class])
        test = set(rng.sample(range(len(paths)), round(len(paths) * test_share)))
        for i, p in enumerate(paths):
            rows.append({"key": str(p.relative_to(root)), "path": str(p), "label": label,
                         "split": "test" if i in test else "train"})
    return rows
