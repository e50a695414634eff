"""Query results for the terminal (aligned columns) or as JSON."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa


def format_result(table: pa.Table, *, as_json: bool = False, max_width: int = 60) -> str:
    """Render a query result for the terminal (aligned columns) or as a JSON list of rows."""
    rows = table.to_pylist()
    if as_json:
        return json.dumps(rows, indent=2, default=_json_default)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        if isinstance(v, list | tuple) and v and all(isinstance(x, int | float) for x in v):
            shown = ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v[:4])
            return f"[{shown}{', ...' if len(v) > 4 else ''}] ({len(v)})"
        s = "NULL" if v is None else str(v)
        return s if len(s) <= max_width else s[: max_width - 3] + "..."

    cols = table.column_names
    cells = [[cell(r[c]) for c in cols] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def _json_default(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, np.generic):
        return v.item()
    return str(v)
