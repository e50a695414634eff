-- embed_assets vector macros for DuckDB (plain SQL, no extension needed).
--
-- Load into any DuckDB:   .read sql/vectors.sql      (CLI)
--                         con.execute(open("sql/vectors.sql").read())   (Python)
-- embed_assets.connect() loads this file and then sql/store.sql, which swaps a few
-- macros for faster Python-backed versions with the same results.
--
-- Vectors are LISTs (FLOAT[]/DOUBLE[]) or ARRAYs (FLOAT[n], what store tables hold).
-- Element-wise results are LISTs; cast back with ::FLOAT[n] where a fixed size is needed.
--
-- Conventions
-- * Dimensions must match: vec_add([1,2,3], [1,2]) raises
--   "vec_add: dimension mismatch (3 vs 2)". Nothing is ever truncated or padded.
-- * NULL vector argument -> NULL result (every scalar macro).
-- * NULL element inside a vector: element-wise macros (vec_add, vec_sub, vec_scale,
--   vec_normalize) give NULL at that position; reductions (vec_dot, vec_norm, vec_cosine,
--   vec_l2) raise DuckDB's "... can not contain NULL values" error. vec_mean / vec_sum /
--   list_vec_mean / list_vec_sum skip NULL vectors (like avg/sum skip NULL rows), give
--   NULL for a group or list with no vector, and give NULL at a position where any
--   vector has a NULL element.
-- * vec_cosine of a zero vector is NULL (undefined), and vec_normalize of a zero vector is
--   NULL too (DuckDB's list_cosine_similarity returns -1 there, which would mislead).
-- * Distances (knn, similarity_join, vec_distance): cosine = 1 - cosine similarity;
--   dot = 1 - dot product (Lance's convention, so equal to cosine distance on unit
--   vectors); l2 = Euclidean distance (not squared); mahalanobis needs an inverse
--   covariance matrix (see vec_mahalanobis).
--
-- Scalar subqueries: DuckDB refuses a subquery inside a lambda ("subqueries in lambda
-- expressions are not supported"). No argument of these macros is ever placed inside a
-- lambda body: the second operand travels through list_zip (and a scalar through
-- list_resize), so vec_add(v, (SELECT direction FROM dirs WHERE name = 'dev')) works.

-- -- helpers --------------------------------------------------------------------------------
CREATE OR REPLACE MACRO __ea_dim_error(fn, a, b) AS
    error(fn || ': dimension mismatch (' || len(a) || ' vs ' || len(b) || ')');

-- -- element-wise ------------------------------------------------------------------------------
CREATE OR REPLACE MACRO vec_add(a, b) AS
    CASE WHEN a IS NULL OR b IS NULL THEN NULL
         WHEN len(a) <> len(b) THEN __ea_dim_error('vec_add', a, b)
         ELSE list_transform(list_zip(a, b), x -> x[1] + x[2]) END;

CREATE OR REPLACE MACRO vec_sub(a, b) AS
    CASE WHEN a IS NULL OR b IS NULL THEN NULL
         WHEN len(a) <> len(b) THEN __ea_dim_error('vec_sub', a, b)
         ELSE list_transform(list_zip(a, b), x -> x[1] - x[2]) END;

CREATE OR REPLACE MACRO vec_scale(a, s) AS
    CASE WHEN a IS NULL OR s IS NULL THEN NULL
         ELSE list_transform(list_zip(a, list_resize([s], len(a), s)), x -> x[1] * x[2]) END;

-- -- reductions --------------------------------------------------------------------------------
CREATE OR REPLACE MACRO vec_dot(a, b) AS
    CASE WHEN a IS NULL OR b IS NULL THEN NULL
         WHEN len(a) <> len(b) THEN __ea_dim_error('vec_dot', a, b)
         ELSE list_inner_product(a, b) END;

CREATE OR REPLACE MACRO vec_norm(a) AS sqrt(list_inner_product(a, a));

CREATE OR REPLACE MACRO vec_normalize(a) AS
    CASE WHEN a IS NULL OR vec_norm(a) = 0 THEN NULL
         ELSE list_transform(list_zip(a, list_resize([1.0 / vec_norm(a)], len(a), 1.0 / vec_norm(a))),
                             x -> x[1] * x[2]) END;

CREATE OR REPLACE MACRO vec_cosine(a, b) AS
    CASE WHEN a IS NULL OR b IS NULL THEN NULL
         WHEN len(a) <> len(b) THEN __ea_dim_error('vec_cosine', a, b)
         ELSE list_inner_product(a, b)
              / NULLIF(sqrt(list_inner_product(a, a)) * sqrt(list_inner_product(b, b)), 0) END;

CREATE OR REPLACE MACRO vec_l2(a, b) AS
    CASE WHEN a IS NULL OR b IS NULL THEN NULL
         WHEN len(a) <> len(b) THEN __ea_dim_error('vec_l2', a, b)
         ELSE list_distance(a, b) END;

-- Matrix-vector product: m is a list of rows (DOUBLE[][]), v a vector of len(m[1]).
CREATE OR REPLACE MACRO mat_vec(m, v) AS
    CASE WHEN m IS NULL OR v IS NULL THEN NULL
         WHEN len(m[1]) <> len(v) THEN __ea_dim_error('mat_vec', m[1], v)
         ELSE list_transform(list_zip(m, list_resize([v], len(m), v)), r -> list_inner_product(r[1], r[2])) END;

-- Mahalanobis distance sqrt((a-b)' S^-1 (a-b)) given the inverse covariance S^-1
-- (mat_inverse(vec_covariance(v)), below, or any d x d list of rows).
CREATE OR REPLACE MACRO vec_mahalanobis(a, b, inv_cov) AS
    CASE WHEN a IS NULL OR b IS NULL OR inv_cov IS NULL THEN NULL
         WHEN len(a) <> len(b) THEN __ea_dim_error('vec_mahalanobis', a, b)
         WHEN len(inv_cov) <> len(a) THEN __ea_dim_error('vec_mahalanobis', inv_cov, a)
         ELSE sqrt(greatest(list_inner_product(vec_sub(a, b), mat_vec(inv_cov, vec_sub(a, b))), 0)) END;

-- Distance under a named metric (what knn and similarity_join rank by).
CREATE OR REPLACE MACRO vec_distance(a, b, metric := 'cosine', inv_cov := NULL) AS
    CASE lower(metric)
         WHEN 'cosine' THEN 1 - vec_cosine(a, b)
         WHEN 'dot' THEN 1 - vec_dot(a, b)
         WHEN 'l2' THEN vec_l2(a, b)
         WHEN 'mahalanobis' THEN vec_mahalanobis(a, b, inv_cov)
         ELSE error('unknown metric ''' || metric || '''; choose cosine, dot, l2 or mahalanobis') END;

-- -- aggregates ---------------------------------------------------------------------------------
-- list_vec_sum / list_vec_mean take a list of vectors; vec_sum / vec_mean are aggregates
-- (GROUP BY, or OVER a window). For "mean of the last 5 items":
--   list_vec_mean(list(v) OVER (PARTITION BY user ORDER BY ts ROWS BETWEEN 4 PRECEDING AND CURRENT ROW))
-- Pure SQL, lambda-only (a subquery here would refuse window arguments: "correlated
-- columns in window functions not supported"): drop NULL rows, check that every vector
-- has the same length, fold with vec_add in DOUBLE.
CREATE OR REPLACE MACRO __ea_list_vec_sum(vs, fn) AS
    CASE WHEN vs IS NULL OR len(list_filter(vs, v -> v IS NOT NULL)) = 0 THEN NULL
         WHEN len(list_distinct(list_transform(list_filter(vs, v -> v IS NOT NULL), v -> len(v)))) > 1
             THEN error(fn || ': dimension mismatch (vectors of '
                        || array_to_string(list_sort(list_distinct(list_transform(
                               list_filter(vs, v -> v IS NOT NULL), v -> len(v)))), ', ')
                        || ' elements)')
         ELSE list_reduce(list_transform(list_filter(vs, v -> v IS NOT NULL), v -> CAST(v AS DOUBLE[])),
                          (acc, v) -> list_transform(list_zip(acc, v), x -> x[1] + x[2])) END;

CREATE OR REPLACE MACRO list_vec_sum(vs) AS __ea_list_vec_sum(vs, 'vec_sum');
CREATE OR REPLACE MACRO list_vec_mean(vs) AS
    vec_scale(__ea_list_vec_sum(vs, 'vec_mean'), 1.0 / len(list_filter(vs, v -> v IS NOT NULL)));
CREATE OR REPLACE MACRO vec_mean(v) AS list_vec_mean(list(v));
CREATE OR REPLACE MACRO vec_sum(v) AS list_vec_sum(list(v));

-- Windows: DuckDB binds a macro before it sees OVER, and refuses a macro there
-- ("Window function macros must be functions"), so in a plain DuckDB the window form is
-- the list one: list_vec_mean(list(v) OVER w), list_vec_sum(list(v) OVER w),
-- list_vec_covariance(list(v) OVER w). (In a connect()ed session with the ea_vec
-- extension, vec_mean/vec_sum are real aggregates and OVER works on them too.)

-- -- covariance and inverse (plain SQL versions; connect() swaps in numpy ones) -------------
-- list_vec_covariance(list of vectors) / vec_covariance(v) (aggregate): the sample
-- covariance (divisor n - 1) as a list of rows (DOUBLE[][]); NULL vectors are skipped,
-- fewer than two vectors give NULL, mixed dimensions raise. It sums n outer products in
-- lambdas, O(n d^2) list operations: fine for small d (500 x 16 in well under a second),
-- far too slow for 384-dimensional embeddings (use connect(), whose version is numpy).
CREATE OR REPLACE MACRO list_vec_covariance(vs) AS
    list_transform(
        [list_transform(list_filter(vs, __ea_v -> __ea_v IS NOT NULL), __ea_v -> CAST(__ea_v AS DOUBLE[]))],
        __ea_vs -> CASE WHEN __ea_vs IS NULL OR len(__ea_vs) < 2 THEN NULL
            ELSE list_transform(
                [vec_scale(__ea_list_vec_sum(__ea_vs, 'vec_covariance'), 1.0 / len(__ea_vs))],
                __ea_mu -> list_transform(
                    list_reduce(
                        list_transform(__ea_vs, __ea_x -> list_transform(
                            [list_transform(list_zip(__ea_x, __ea_mu), __ea_e -> __ea_e[1] - __ea_e[2])],
                            __ea_c -> list_transform(__ea_c, __ea_a -> list_transform(__ea_c, __ea_b -> __ea_a * __ea_b)))[1]),
                        (__ea_acc, __ea_o) -> list_transform(list_zip(__ea_acc, __ea_o),
                            __ea_r -> list_transform(list_zip(__ea_r[1], __ea_r[2]), __ea_e -> __ea_e[1] + __ea_e[2]))),
                    __ea_r -> list_transform(__ea_r, __ea_e -> __ea_e / (len(__ea_vs) - 1))))[1] END)[1];
CREATE OR REPLACE MACRO vec_covariance(v) AS list_vec_covariance(list(v));

-- mat_inverse in plain SQL: Gauss-Jordan elimination with partial pivoting, one
-- list_reduce step per column on the augmented matrix [M | I]. O(d^3) list operations:
-- fine for the small d of hand-written or low-dimensional covariances (d = 16 in ~30 ms,
-- d = 64 in ~2 s); a singular matrix raises (connect()'s numpy version falls back to a
-- pseudo-inverse instead). Lambda parameters carry __ea_ names: DuckDB identifiers
-- ignore case, so a lambda's S would capture an argument's s.
CREATE OR REPLACE MACRO __ea_gj_pivot(a, i) AS
    i - 1 + list_position(list_transform(a[i:], __ea_x -> abs(__ea_x[i])),
                          list_max(list_transform(a[i:], __ea_x -> abs(__ea_x[i]))));
CREATE OR REPLACE MACRO __ea_gj_step(a, i) AS
    list_transform(
        [list_transform(range(1, len(a) + 1), __ea_r ->
            CASE WHEN __ea_r = i THEN a[__ea_gj_pivot(a, i)]
                 WHEN __ea_r = __ea_gj_pivot(a, i) THEN a[i]
                 ELSE a[__ea_r] END)],
        __ea_s -> list_transform(
            [CASE WHEN abs(__ea_s[i][i]) <= 1e-12 * greatest(list_max(list_transform(__ea_s,
                           __ea_x -> list_max(list_transform(__ea_x[1:len(__ea_s)], __ea_e -> abs(__ea_e))))), 1e-300)
                  THEN error('mat_inverse: the matrix is singular (connect()''s mat_inverse gives a pseudo-inverse)')
                  ELSE list_transform(__ea_s[i], __ea_e -> __ea_e / __ea_s[i][i]) END],
            __ea_p -> list_transform(range(1, len(__ea_s) + 1), __ea_r ->
                CASE WHEN __ea_r = i THEN __ea_p
                     ELSE list_transform(list_zip(__ea_s[__ea_r], __ea_p),
                                         __ea_e -> __ea_e[1] - __ea_s[__ea_r][i] * __ea_e[2]) END))[1])[1];

CREATE OR REPLACE MACRO mat_inverse(m) AS
    CASE WHEN m IS NULL THEN NULL
         WHEN len(list_distinct(list_transform(m, __ea_r -> coalesce(len(__ea_r), -1)) || [len(m)])) > 1
             THEN error('mat_inverse: matrix must be square, got ' || len(m) || ' rows of '
                        || len(m[1]) || ' elements')
         ELSE list_transform([CAST(m AS DOUBLE[][])], __ea_m ->
             list_transform(
                 list_reduce(
                     list_transform(range(1, len(__ea_m) + 1), __ea_i -> [[__ea_i::DOUBLE]]),
                     (__ea_a, __ea_step) -> __ea_gj_step(__ea_a, CAST(__ea_step[1][1] AS BIGINT)),
                     list_transform(range(1, len(__ea_m) + 1), __ea_r ->
                         __ea_m[__ea_r] || list_transform(range(1, len(__ea_m) + 1),
                             __ea_c -> CASE WHEN __ea_r = __ea_c THEN 1.0 ELSE 0.0 END::DOUBLE))),
                 __ea_r -> __ea_r[len(__ea_m) + 1:]))[1] END;

-- -- table macros (exact, pure SQL) --------------------------------------------------------------
-- A table name as SQL text: a plain (schema.)name as written, anything else quoted as
-- one identifier, so a name (a bound parameter too) never adds SQL to the statement.
CREATE OR REPLACE MACRO __ea_table_sql(t) AS
    CASE WHEN regexp_full_match(t, '[A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)*') THEN t
         ELSE '"' || replace(t, '"', '""') || '"' END;
-- k of knn / similarity_join: a positive integer (typeof is folded while binding), else
-- a refusal that names the value, not the functions k is handed to.
CREATE OR REPLACE MACRO __ea_k(fn, k) AS
    CASE WHEN typeof(k) IN ('TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'HUGEINT', 'UTINYINT',
                            'USMALLINT', 'UINTEGER', 'UBIGINT', 'UHUGEINT')
              AND TRY_CAST(k AS BIGINT) >= 1 THEN TRY_CAST(k AS BIGINT)
         ELSE error(fn || ': k must be a positive integer, got '
                    || CASE WHEN k IS NULL THEN 'NULL'
                            WHEN typeof(k) = 'VARCHAR' THEN '' || CAST(k AS VARCHAR) || ''
                            ELSE CAST(k AS VARCHAR) END) END;
-- The query vector of knn: a NULL one (a NULL literal or parameter, a scalar subquery
-- with no row or a NULL value, a LATERAL row's NULL vector) is refused, as in Python
-- (Table.search(None)), rather than ranked as no rows.
CREATE OR REPLACE MACRO __ea_qv(fn, q) AS
    CASE WHEN q IS NULL THEN error(fn || ': the query vector is NULL') ELSE q END;
-- k as a LIMIT takes it: a constant DuckDB folds while binding (a correlated LATERAL call
-- needs one), whatever was given; __ea_k refuses a bad k where the rows are computed.
CREATE OR REPLACE MACRO __ea_limit(k) AS greatest(coalesce(TRY_CAST(k AS BIGINT), 0), 0);
-- The rows of a table, or the rows a filter selects (a SQL predicate as a string, as
-- knn's filter := takes it): query() runs the statement built from both.
CREATE OR REPLACE MACRO __ea_rows(table_name, filter) AS TABLE
    SELECT * FROM query('SELECT * FROM ' || __ea_table_sql(table_name)
                        || coalesce(' WHERE (' || filter || ')', ''));

-- knn('table', query_vector, k): the table's columns plus distance and rank (1 = nearest).
-- Works on any table or view with a vector column; filter := 'section = ''editors'''
-- ranks only the rows the predicate selects (before the top k, not after). connect()
-- replaces it with a version that reads store tables through the store's search planner
-- (the filter's rows exactly, or the table's ANN index) and takes the metric from the
-- table's metadata.
CREATE OR REPLACE MACRO knn(table_name, query_vector, k, metric := 'cosine', vector := 'vector',
                            inv_cov := NULL, filter := NULL) AS TABLE
    SELECT *, CAST(row_number() OVER (ORDER BY distance) AS INTEGER) AS rank
    FROM (SELECT *, vec_distance(COLUMNS(c -> c = vector),
                                 CASE WHEN __ea_k('knn', k) > 0 THEN __ea_qv('knn', query_vector) END,
                                 metric, inv_cov) AS distance
          FROM __ea_rows(table_name, filter)
          ORDER BY distance
          LIMIT __ea_limit(k))
    ORDER BY rank;

-- similarity_join('left', 'right', k): for every left row its k nearest right rows, as
-- (left_key, right_key, distance, rank). O(|left| x |right|) in SQL: fine for small
-- tables; connect() replaces it with a blocked GEMM + partial sort that keeps pace with numpy.
-- left_filter := / right_filter := (SQL predicates as strings) choose each side's rows first.
CREATE OR REPLACE MACRO similarity_join(left_table, right_table, k, key := 'id', vector := 'vector',
                                        left_key := NULL, right_key := NULL, metric := 'cosine',
                                        inv_cov := NULL, approximate := false,
                                        left_filter := NULL, right_filter := NULL) AS TABLE
    -- left_key/right_key are also parameter names, so inner columns use other names.
    SELECT __lk AS left_key, __rk AS right_key, distance, rank FROM (
        SELECT *, CAST(row_number() OVER (PARTITION BY __lk ORDER BY distance) AS INTEGER) AS rank
        FROM (SELECT __l.__k AS __lk, __r.__k AS __rk,
                     vec_distance(__l.__v, __r.__v, metric, inv_cov) AS distance
              FROM (SELECT COLUMNS(c -> c = coalesce(left_key, key)) AS __k,
                           COLUMNS(c -> c = vector) AS __v
                    FROM __ea_rows(left_table, left_filter)) __l,
                   (SELECT COLUMNS(c -> c = coalesce(right_key, key)) AS __k,
                           COLUMNS(c -> c = vector) AS __v
                    FROM __ea_rows(right_table, right_filter)) __r
              WHERE __l.__v IS NOT NULL AND __r.__v IS NOT NULL))
    WHERE rank <= __ea_k('similarity_join', k)
    ORDER BY 1, 4;
