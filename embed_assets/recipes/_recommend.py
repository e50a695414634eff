"""Recommender embeddings: truncated SVD of a user x item interaction matrix.

On the shipped Debian slice the users are packages and the items the names they depend
on (:func:`interactions_from_depends`): 2,040 packages, 1,777 of which depend on
something, 9,940 (package, dependency) edges over 3,247 dependency names.
:func:`fit_recommender` factors the binary matrix ``X`` (users x items, 1 where an edge
exists) and stores

* users and items as vectors whose dot product is the rank-``r`` reconstruction of the
  matrix entry, the score of the link: by default (``center=True``) the SVD of ``X``
  minus its column means ``m`` (scikit-learn's ``PCA``, ARPACK, which centres the sparse
  matrix implicitly), user = ``[U sqrt(S), 1]``, item = ``[V sqrt(S), m_i]``, so
  ``dot = m_i + (U S V')_ui`` (``r + 1`` components: the last carries the item's
  popularity); with ``center=False`` the plain ``TruncatedSVD`` of ``X``, user =
  ``U sqrt(S)``, item = ``V sqrt(S)``, ``dot = (U S V')_ui`` (``r`` components);
* each as a versioned store table with metric ``"dot"`` (one version per retrain, written
  with ``mode="overwrite"``); distances there are ``1 - dot``, so the nearest items of a
  user vector are its best-scored items, in ``search()`` and in SQL's ``knn`` alike.

Before writing, the model is evaluated on held-out edges against a popularity baseline;
the tables are then written from a refit on *all* edges (see :func:`fit_recommender`).

Why centred and why rank 8 by default, measured on the Debian slice (held-out 10% of
each package's dependencies, 1,644 edges; means over seeds 0-4): the plain SVD's hit@10
is at best level with ranking by popularity (rank 4-8: 0.270-0.272 against 0.273) and
worse at rank 32 (0.246); centred, it beats popularity at ranks 4-12 on every seed (rank
8: 0.293) and falls behind from rank 24 (rank 32: 0.264). The matrix is very sparse
(5.6 dependencies per package): more components fit noise. AUC beats popularity's
(0.699) in every variant (centred rank 8: 0.775; plain rank 32: 0.718).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ..errors import ValidationError
from ..kernels import top_k_rows
from ..store import VECTOR_COLUMN, Store, VersionRef

__all__ = [
    "DEFAULT_ITEMS_TABLE",
    "DEFAULT_USERS_TABLE",
    "RecommenderReport",
    "fit_recommender",
    "interactions_from_depends",
    "recommend",
]

DEFAULT_USERS_TABLE = "recommender_users"
DEFAULT_ITEMS_TABLE = "recommender_items"
MODEL_NAME = "truncated-svd"   # center=False
MODEL_CENTRED = "centred-svd"  # center=True (the default)
# Columns the recipe adds beside the key and the vector.
ITEMS_COLUMN = "items"    # users table: the items the user interacts with (sorted)
DEGREE_COLUMN = "degree"  # users: how many items; items: how many users (popularity)
FIT_COLUMN = "fit_id"     # both tables: which fit wrote the row (vectors of two fits do not mix)
_RESERVED = (VECTOR_COLUMN, ITEMS_COLUMN, DEGREE_COLUMN, FIT_COLUMN)


@dataclass
class RecommenderReport:
    """What :func:`fit_recommender` wrote and how well the model ranks held-out edges.

    Attributes
    ----------
    users_table, items_table : str
        The two tables written; ``users_version`` and ``items_version`` their new versions.
    rank : int
        Number of SVD components; ``dimension`` is the vectors' (``rank + 1`` when
        ``center``: the popularity component).
    users, items, edges : int
        Size of the interaction matrix (all edges: what the stored tables hold).
    explained_variance : float
        ``explained_variance_ratio_.sum()`` of the stored fit (all edges): the share of
        the matrix's total variance that the ``rank`` components carry.
    heldout_edges : int
        Edges hidden for the evaluation (0 when ``holdout=0``: the metrics are NaN).
    hit_at_10, auc : float
        The SVD model fitted on the training edges: share of held-out edges whose item is
        in the user's top 10 (among items the user has no training edge with), and the
        probability that a held-out item scores above a sampled item the user has no
        edge with (ties count one half).
    popularity_hit_at_10, popularity_auc : float
        The same for the baseline that ranks every user's items by training degree.
    fitted_on : str
        ``"all edges"``: the stored vectors come from a refit on every edge.
    """

    users_table: str
    items_table: str
    users_version: int
    items_version: int
    rank: int
    center: bool
    dimension: int
    users: int
    items: int
    edges: int
    explained_variance: float
    heldout_edges: int
    hit_at_10: float
    auc: float
    popularity_hit_at_10: float
    popularity_auc: float
    seed: int
    holdout: float
    run_id: str
    seconds: float
    fitted_on: str = "all edges"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.users_table}@{self.users_version} / {self.items_table}@{self.items_version}: "
                f"rank {self.rank} {'centred ' if self.center else ''}SVD of "
                f"{self.users} x {self.items} ({self.edges} edges), "
                f"explained variance {self.explained_variance:.3f}; on {self.heldout_edges} "
                f"held-out edges hit@10 {self.hit_at_10:.3f} (popularity "
                f"{self.popularity_hit_at_10:.3f}), AUC {self.auc:.3f} (popularity "
                f"{self.popularity_auc:.3f})")


def interactions_from_depends(df: Any, *, user: str = "package", item: str = "dependency",
                              source: str = "depends") -> pl.DataFrame:
    """The (package, dependency) edges of a frame with a list column of dependencies.

    Parameters
    ----------
    df : polars.DataFrame or anything ``polars.DataFrame()`` accepts (Arrow, pandas, dict)
        Needs a ``package`` column and a ``depends`` list column, as
        :func:`embed_assets._demo.demo_source` returns.
    user, item : str
        Names of the two output columns (``user`` is also the input's key column).
    source : str
        The list column to explode.

    Returns
    -------
    polars.DataFrame
        One row per distinct (user, item) edge, nulls dropped, in first-seen order.

    Examples
    --------
    >>> import polars as pl
    >>> df = pl.DataFrame({"package": ["vim", "nano"], "depends": [["libc6", "vim-common"], None]})
    >>> interactions_from_depends(df).rows()
    [('vim', 'libc6'), ('vim', 'vim-common')]
    """
    frame = df if isinstance(df, pl.DataFrame) else pl.DataFrame(df)
    for col in (user, source):
        if col not in frame.columns:
            raise ValidationError(f"no column {col!r}; columns are {', '.join(frame.columns)}")
    out = (frame.select(pl.col(user), pl.col(source).alias(item))
           .explode(item)
           .drop_nulls()
           .unique(maintain_order=True))
    return out


# -- fitting -----------------------------------------------------------------------------
@dataclass
class _Edges:
    users: list[Any]      # sorted distinct users
    items: list[Any]      # sorted distinct items
    u: np.ndarray         # user index of each edge
    i: np.ndarray         # item index of each edge


def _edges(interactions: Any, user: str, item: str) -> _Edges:
    frame = interactions if isinstance(interactions, pl.DataFrame) else pl.DataFrame(interactions)
    for col in (user, item):
        if col not in frame.columns:
            raise ValidationError(f"interactions have no column {col!r}; columns are "
                                  f"{', '.join(frame.columns)}")
    frame = frame.select(user, item).drop_nulls().unique()
    if frame.height == 0:
        raise ValidationError("no interactions (after dropping nulls)")
    users = frame.get_column(user).unique().sort()
    items = frame.get_column(item).unique().sort()
    uidx = pl.DataFrame({user: users, "__u": np.arange(len(users))})
    iidx = pl.DataFrame({item: items, "__i": np.arange(len(items))})
    coded = frame.join(uidx, on=user).join(iidx, on=item).sort("__u", "__i")
    return _Edges(users.to_list(), items.to_list(),
                  coded.get_column("__u").to_numpy().astype(np.int64),
                  coded.get_column("__i").to_numpy().astype(np.int64))


def _matrix(u: np.ndarray, i: np.ndarray, shape: tuple[int, int]) -> Any:
    from scipy import sparse

    return sparse.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=shape)


def _svd(x: Any, rank: int, seed: int, center: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """(user vectors, item vectors, explained variance ratio) of one fit.

    ``center=False``: ``TruncatedSVD`` of ``X``; users ``U sqrt(S)``, items ``V sqrt(S)``.
    ``center=True``: ``PCA`` (ARPACK, which centres a sparse matrix implicitly) of ``X``
    minus its column means ``m``; users ``[U sqrt(S), 1]``, items ``[V sqrt(S), m_i]``, so
    that ``dot(user, item) = m_i + (U S V')_ui``, the rank-``r`` reconstruction of ``X``.
    """
    x = x.astype(np.float64)
    if center:
        from sklearn.decomposition import PCA

        model: Any = PCA(n_components=rank, svd_solver="arpack", random_state=seed)
    else:
        from sklearn.decomposition import TruncatedSVD

        model = TruncatedSVD(n_components=rank, algorithm="randomized", n_iter=7, random_state=seed)
    us = model.fit_transform(x)                      # U S
    s = np.maximum(model.singular_values_, 1e-12)
    users = us / np.sqrt(s)                          # U sqrt(S)
    items = model.components_.T * np.sqrt(s)         # V sqrt(S)
    if center:
        users = np.c_[users, np.ones(len(users))]
        items = np.c_[items, model.mean_]
    return (users.astype(np.float32), items.astype(np.float32),
            float(model.explained_variance_ratio_.sum()))


def _split(e: _Edges, holdout: float, rng: np.random.Generator) -> np.ndarray:
    """A mask of held-out edges: per user with n >= 2 edges, ``max(1, round(holdout * n))``
    of them (at most n - 1), drawn without replacement; users in sorted order."""
    held = np.zeros(len(e.u), bool)
    if holdout <= 0:
        return held
    starts = np.flatnonzero(np.r_[True, e.u[1:] != e.u[:-1]])
    ends = np.r_[starts[1:], len(e.u)]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        n = b - a
        if n < 2:
            continue
        m = min(n - 1, max(1, int(np.floor(holdout * n + 0.5))))
        held[a + rng.choice(n, size=m, replace=False)] = True
    return held


def _negatives(e: _Edges, hu: np.ndarray, n_items: int, negatives: int,
               rng: np.random.Generator) -> np.ndarray:
    """Per held-out edge, ``negatives`` items drawn uniformly (with replacement) among the
    items its user has no edge with at all: uniform draws, those that hit one of the
    user's items drawn again (rejection sampling)."""
    edge_codes = np.unique(e.u * n_items + e.i)
    neg = rng.integers(0, n_items, size=(len(hu), negatives))
    for _ in range(64):
        bad = np.isin(hu[:, None] * n_items + neg, edge_codes)
        if not bad.any():
            return neg
        neg[bad] = rng.integers(0, n_items, size=int(bad.sum()))
    raise ValidationError("cannot sample negatives: some users interact with almost every item")


# Users scored at once in the evaluation: a block of scores is BLOCK x items float32.
_BLOCK = 2048


def _evaluate(e: _Edges, held: np.ndarray, users: np.ndarray, items: np.ndarray,
              rng: np.random.Generator, negatives: int, k: int = 10) -> dict[str, float]:
    """hit@k and AUC of the SVD scores and of training-degree popularity on held-out edges."""
    n_users, n_items = len(e.users), len(e.items)
    train = _matrix(e.u[~held], e.i[~held], (n_users, n_items))
    degree = np.asarray(train.sum(axis=0)).ravel().astype(np.float32)
    hu, hi = e.u[held], e.i[held]
    neg = _negatives(e, hu, n_items, negatives, rng)
    eval_users = np.unique(hu)
    sums = {"svd": [0.0, 0.0], "popularity": [0.0, 0.0]}  # hits, AUC sum over edges
    for b in range(0, len(eval_users), _BLOCK):
        block = eval_users[b:b + _BLOCK]
        sel = np.flatnonzero(np.isin(hu, block))
        pos = np.searchsorted(block, hu[sel])
        t = train[block]
        train_rows = np.repeat(np.arange(len(block)), np.diff(t.indptr))
        for name in sums:
            scores = (users[block] @ items.T if name == "svd"
                      else np.tile(degree, (len(block), 1))).astype(np.float32)
            # Candidates: items without a training edge (training items are not recommended).
            scores[train_rows, t.indices] = -np.inf
            top = top_k_rows(-scores, k)                 # best first, ties by item order
            sums[name][0] += float((top[pos] == hi[sel, None]).any(axis=1).sum())
            s_pos = scores[pos, hi[sel]][:, None]
            s_neg = scores[pos[:, None], neg[sel]]
            sums[name][1] += float(((s_pos > s_neg).mean(axis=1)
                                    + 0.5 * (s_pos == s_neg).mean(axis=1)).sum())
    n = max(len(hu), 1)
    return {"svd": sums["svd"][0] / n, "svd_auc": sums["svd"][1] / n,
            "popularity": sums["popularity"][0] / n, "popularity_auc": sums["popularity"][1] / n}


def _vectors(mat: np.ndarray) -> pa.FixedSizeListArray:
    mat = np.ascontiguousarray(mat, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), mat.shape[1])


def fit_recommender(
    store: Store,
    interactions: Any,
    *,
    user: str = "package",
    item: str = "dependency",
    rank: int = 8,
    holdout: float = 0.1,
    seed: int = 0,
    users_table: str = DEFAULT_USERS_TABLE,
    items_table: str = DEFAULT_ITEMS_TABLE,
    run_id: str | None = None,
    center: bool = True,
    negatives: int = 100,
) -> RecommenderReport:
    """Fit truncated-SVD user and item embeddings, evaluate them, store both tables.

    Procedure:

    1. The binary users x items matrix of the distinct ``(user, item)`` edges (users and
       items in sorted order).
    2. Hold-out split (seeded by ``seed``): for each user with ``n >= 2`` items,
       ``max(1, round(holdout * n))`` of its edges (never all of them) are hidden.
    3. The SVD of the training matrix, seeded: with ``center`` (default)
       ``PCA(rank, svd_solver="arpack", random_state=seed)``, user = ``[U sqrt(S), 1]``,
       item = ``[V sqrt(S), m_i]`` (``m``: column means); else
       ``TruncatedSVD(rank, algorithm="randomized", n_iter=7, random_state=seed)``,
       user = ``U sqrt(S)``, item = ``V sqrt(S)``. Score = their dot product, the
       reconstructed matrix entry.
    4. Evaluation on the hidden edges: ``hit_at_10`` is the share of hidden edges whose
       item is among the user's 10 best-scored items, ranked among the items the user
       has no *training* edge with (its other hidden items compete); ``auc`` is the
       probability that the hidden item scores above a negative: ``negatives`` items per
       hidden edge drawn uniformly among the items the user has no edge with at all
       (ties count 1/2). The popularity baseline scores every item by its training
       degree (how many users have it) and is measured on the same edges and negatives.
    5. **Refit on all edges** (same rank and seed) and write that model: the evaluation
       says how well this procedure generalises; the stored vectors use every edge,
       so no user or item is left with a vector learnt without its own edges.

    The tables: ``users_table`` keyed by ``user`` with ``vector``, ``items`` (the user's
    items, sorted: what :func:`recommend` excludes), ``degree`` and ``fit_id``;
    ``items_table`` keyed by ``item`` with ``vector``, ``degree`` (the item's popularity)
    and ``fit_id``. Both have metric ``"dot"`` and model ``"centred-svd"`` (or
    ``"truncated-svd"``), revision ``rank<r>``; each call
    writes one new version of each (``mode="overwrite"``: users first, then items), whose
    transaction properties hold the hyperparameters and the metrics (``properties()`` of
    the version: ``rank``, ``seed``, ``holdout``, ``hit_at_10``, ``auc``,
    ``popularity_hit_at_10``, ``popularity_auc``, ``explained_variance``...). Retraining
    both tables together keeps their version numbers in step, which :func:`recommend`
    relies on when given a version.

    Parameters
    ----------
    store : Store
    interactions : polars.DataFrame or anything ``polars.DataFrame()`` accepts
        One row per (user, item) edge; duplicates and nulls are dropped.
    user, item : str
        The two columns; they become the key columns of the two tables.
    rank : int
        SVD components, below both matrix dimensions. 8 by default: on the Debian slice
        ranks 4-12 beat popularity and 24 or more do not (see the module docstring).
    holdout : float
        Share of each eligible user's edges hidden for the evaluation; ``0`` skips it
        (metrics NaN).
    seed : int
        Seeds the split, the negatives and the SVD: a fit is reproducible.
    users_table, items_table : str
        Table names.
    run_id : str, optional
        Recorded with both versions (and in their ``fit_id`` column); generated if omitted.
    center : bool
        Factor the matrix minus its column means and carry them as the last component
        (default), or factor the raw matrix.
    negatives : int
        Negatives sampled per held-out edge for the AUC.

    Returns
    -------
    RecommenderReport

    Examples
    --------
    >>> import tempfile
    >>> from embed_assets import Store
    >>> from embed_assets._demo import demo_source
    >>> store = Store(tempfile.mkdtemp())
    >>> r = fit_recommender(store, interactions_from_depends(demo_source()))
    >>> (r.users, r.items, r.edges, r.dimension, r.users_version)
    (1777, 3247, 9940, 9, 1)
    >>> r.hit_at_10 > r.popularity_hit_at_10
    True
    """
    started = time.perf_counter()
    if user == item:
        raise ValidationError(f"user and item must be different columns (both {user!r})")
    for col in (user, item):
        if col in _RESERVED:
            raise ValidationError(f"column name {col!r} is used by the recipe; rename it "
                                  f"(reserved: {', '.join(_RESERVED)})")
    if not 0 <= holdout < 1:
        raise ValidationError(f"holdout must be in [0, 1), not {holdout!r}")
    if negatives < 1:
        raise ValidationError(f"negatives must be at least 1, not {negatives!r}")
    e = _edges(interactions, user, item)
    n_users, n_items = len(e.users), len(e.items)
    if not 1 <= rank < min(n_users, n_items):
        raise ValidationError(f"rank must be between 1 and {min(n_users, n_items) - 1} "
                              f"(the matrix is {n_users} x {n_items}), not {rank!r}")
    run_id = run_id or f"recommender-{uuid.uuid4().hex[:12]}"
    rng = np.random.default_rng(seed)

    held = _split(e, holdout, rng)
    nan = float("nan")
    metrics = {"svd": nan, "svd_auc": nan, "popularity": nan, "popularity_auc": nan}
    if held.any():
        train = _matrix(e.u[~held], e.i[~held], (n_users, n_items))
        tu, ti, _ = _svd(train, rank, seed, center)
        metrics = _evaluate(e, held, tu, ti, rng, negatives)

    full = _matrix(e.u, e.i, (n_users, n_items))
    uvec, ivec, explained = _svd(full, rank, seed, center)

    props: dict[str, Any] = {
        "recipe": "recommender", "rank": rank, "center": center, "seed": seed, "holdout": holdout,
        "negatives": negatives, "fitted_on": "all edges", "edges": len(e.u),
        "users": n_users, "items": n_items, "heldout_edges": int(held.sum()),
        "explained_variance": round(explained, 6),
        "hit_at_10": round(metrics["svd"], 6), "auc": round(metrics["svd_auc"], 6),
        "popularity_hit_at_10": round(metrics["popularity"], 6),
        "popularity_auc": round(metrics["popularity_auc"], 6),
        "users_table": users_table, "items_table": items_table,
    }
    # The fit's identity is what it computed, not the run that computed it: a rerun on the
    # same interactions gives the same id, so its overwrite changes nothing and writes no
    # version, while vectors of two different fits still never mix.
    h = hashlib.sha256(np.ascontiguousarray(uvec).tobytes())
    h.update(np.ascontiguousarray(ivec).tobytes())
    h.update("\x00".join(map(str, [*e.users, "|", *e.items])).encode())
    fit_id = f"fit-{h.hexdigest()[:16]}"
    user_items: list[list[Any]] = [[] for _ in range(n_users)]
    for u, i in zip(e.u.tolist(), e.i.tolist(), strict=True):
        user_items[u].append(e.items[i])
    users_data = pa.table({
        user: e.users,
        VECTOR_COLUMN: _vectors(uvec),
        ITEMS_COLUMN: user_items,
        DEGREE_COLUMN: pa.array(np.diff(full.indptr), pa.int64()),
        FIT_COLUMN: [fit_id] * n_users,
    })
    items_data = pa.table({
        item: e.items,
        VECTOR_COLUMN: _vectors(ivec),
        DEGREE_COLUMN: pa.array(np.bincount(e.i, minlength=n_items), pa.int64()),
        FIT_COLUMN: [fit_id] * n_items,
    })
    model = MODEL_CENTRED if center else MODEL_NAME
    common: dict[str, Any] = {"mode": "overwrite", "metric": "dot", "model": model,
                              "model_revision": f"rank{rank}", "run_id": run_id}
    wu = store.write(users_table, users_data, key=user, properties={**props, "side": "users"},
                     **common)
    wi = store.write(items_table, items_data, key=item,
                     properties={**props, "side": "items", "users_version": wu.version},
                     **common)
    return RecommenderReport(
        users_table=users_table, items_table=items_table, users_version=wu.version,
        items_version=wi.version, rank=rank, center=center, dimension=int(uvec.shape[1]),
        users=n_users, items=n_items, edges=len(e.u),
        explained_variance=explained, heldout_edges=int(held.sum()),
        hit_at_10=metrics["svd"], auc=metrics["svd_auc"],
        popularity_hit_at_10=metrics["popularity"], popularity_auc=metrics["popularity_auc"],
        seed=seed, holdout=holdout, run_id=run_id, seconds=time.perf_counter() - started)


# -- serving -------------------------------------------------------------------------------
def recommend(
    store: Store,
    package: Any,
    k: int = 10,
    *,
    users_table: str = DEFAULT_USERS_TABLE,
    items_table: str = DEFAULT_ITEMS_TABLE,
    version: VersionRef = None,
    items_version: VersionRef = None,
    exclude_known: bool = True,
) -> pa.Table:
    """The ``k`` best-scored items for one user (by default: dependencies for a package).

    The user's vector is read from ``users_table`` and the items table is searched with
    it by dot product (``EmbeddingTable.search(vec, metric="dot")``: exact, or the tuned
    index if one was built); ``score = dot(user, item)``, the reconstructed matrix entry.

    Parameters
    ----------
    package
        The user's key.
    k : int
        How many items.
    version : int or str, optional
        Version or tag of the users table; latest by default.
    items_version : int or str, optional
        Version or tag of the items table; by default the same ``version`` (each
        :func:`fit_recommender` call writes one version of both, so retrain N is version
        N of both as long as nothing else writes them; rolling back, roll both back).
        Vectors of two different fits do not mix: the rows' ``fit_id`` must agree, else
        :class:`ValidationError`.
    exclude_known : bool
        Leave out the items the user already has (its ``items`` column in the users
        table); ``False`` returns the plain nearest items, as SQL's ``knn`` does.

    Returns
    -------
    pyarrow.Table
        Columns ``<item key>`` (e.g. ``dependency``), ``score`` (float32) and ``rank``
        (1 = best), best first.

    Examples
    --------
    >>> import tempfile
    >>> from embed_assets import Store
    >>> from embed_assets._demo import demo_source
    >>> store = Store(tempfile.mkdtemp())
    >>> _ = fit_recommender(store, interactions_from_depends(demo_source()))
    >>> recommend(store, "vim", k=3).column_names
    ['dependency', 'score', 'rank']
    """
    if k < 1:
        raise ValidationError(f"k must be at least 1, not {k!r}")
    users = store.table(users_table)
    uver = users.resolve(version)
    ukey = users.meta_at(uver).key
    row = users.get([package], version=uver, columns=[VECTOR_COLUMN, ITEMS_COLUMN, FIT_COLUMN])
    if row.num_rows == 0:
        raise ValidationError(f"{package!r} has no row in {users_table!r} version {uver} "
                              f"(no {ukey} with that key had an interaction when it was fitted)")
    vec = np.asarray(row.column(VECTOR_COLUMN)[0].as_py(), np.float32)
    known = [x for x in (row.column(ITEMS_COLUMN)[0].as_py() or []) if x is not None]
    fit = row.column(FIT_COLUMN)[0].as_py()

    items = store.table(items_table)
    iver = items.resolve(version if items_version is None else items_version)
    ikey = items.meta_at(iver).key
    ds = items.dataset(iver)
    if FIT_COLUMN in ds.schema.names and ds.count_rows():
        item_fit = ds.take([0], columns=[FIT_COLUMN]).column(0)[0].as_py()
        if item_fit != fit:
            raise ValidationError(
                f"{users_table!r} version {uver} and {items_table!r} version {iver} come from "
                f"different fits ({fit!r} vs {item_fit!r}); pass matching versions (roll "
                "both tables back together)")
    fetch = k + (len(known) if exclude_known else 0)
    hits = items.search(vec, k=fetch, version=iver, columns=[ikey], metric="dot")
    keys = hits.column(ikey).to_pylist()
    dist = hits.column("distance").to_numpy(zero_copy_only=False)
    if exclude_known:
        skip = set(known)
        keep = [j for j, key in enumerate(keys) if key not in skip][:k]
    else:
        keep = list(range(min(k, len(keys))))
    return pa.table({
        ikey: pa.array([keys[j] for j in keep], hits.schema.field(ikey).type),
        "score": pa.array((1.0 - dist[keep]).astype(np.float32), pa.float32()),
        "rank": pa.array(np.arange(1, len(keep) + 1), pa.int32()),
    })
