"""What the session knows of a store view: the version it reads and that version's facts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..store import TableMeta


@dataclass
class JoinSide:
    mat: np.ndarray
    keys: pa.Array  # as strings

    @property
    def nbytes(self) -> int:
        return int(self.mat.nbytes + self.keys.nbytes)


@dataclass
class View:
    table: str
    ref: str | None  # None = latest; "3", "prod", "exp" or "exp:3" for name@3 / name@prod...
    version: int | tuple[str, int]  # (experiment, version) for an experiment's version
    dataset: Any
    meta: TableMeta  # the facts of this version (an overwrite may change key or dimension)
