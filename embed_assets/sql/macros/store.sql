-- embed_assets: store-aware replacements for macros of vectors.sql.
--
-- Loaded by embed_assets.connect() AFTER vectors.sql. Needs the Python functions
-- _ea_* that connect() registers, so it does not load into a plain DuckDB.
-- Same results as vectors.sql (the tests compare both to a numpy oracle); faster paths:
--   * list_vec_mean / list_vec_sum (hence vec_mean / vec_sum): one numpy reduction per
--     list instead of a fold of list_zip lambdas;
--   * similarity_join: blocked GEMM + argpartition; a store view on the right side is read
--     from Lance directly (cached per immutable version) instead of list()-ing it in SQL;
--     approximate := true probes the right table's ANN index in batches;
--   * knn on a store view: the store's search finds the k nearest rows (its tuned index
--     path when the table has one and the metric matches, else the cached exact scan) and
--     reports their distances; DuckDB's join filter pushes those keys into the view's
--     scan, which answers it from the version's in-memory key index.
--
-- Metadata per registered view comes from getvariable(): connect() keeps
--   __ea_key     view name -> key column
--   __ea_keykind view name -> 'i' (integer key), 's' (string key), 'o' (other)
--   __ea_metric  view name -> the table's metric
-- getvariable() is folded to a constant while binding, so each branch guarded by it is
-- pruned before execution: only one of the UNION ALL arms below ever scans.

-- typeof() is folded while binding, so only one branch runs: FLOAT vectors go to numpy
-- without a widening copy, anything else (DOUBLE, INTEGER...) as DOUBLE.
CREATE OR REPLACE MACRO __ea_list_vec_agg(vs, how) AS
    CASE WHEN typeof(vs) LIKE 'FLOAT%' THEN _ea_list_vec_agg_f(CAST(vs AS FLOAT[][]), how)
         ELSE _ea_list_vec_agg_d(CAST(vs AS DOUBLE[][]), how) END;
CREATE OR REPLACE MACRO list_vec_mean(vs) AS __ea_list_vec_agg(vs, 'mean');
CREATE OR REPLACE MACRO list_vec_sum(vs) AS __ea_list_vec_agg(vs, 'sum');
CREATE OR REPLACE MACRO list_vec_covariance(vs) AS _ea_list_vec_cov(CAST(vs AS DOUBLE[][]));
CREATE OR REPLACE MACRO vec_covariance(v) AS _ea_list_vec_cov(CAST(list(v) AS DOUBLE[][]));
CREATE OR REPLACE MACRO mat_inverse(m) AS _ea_mat_inverse(m);

CREATE OR REPLACE MACRO __ea_kind(t) AS coalesce(getvariable('__ea_keykind')[t], 'x');
-- A store view's name as query_table() must read it: quoted, since valid table names hold
-- '.', '-' and '@' ('a.b' would otherwise mean table b of schema a). Other names pass
-- through unchanged, so 'main.t' still names a DuckDB table of schema main.
CREATE OR REPLACE MACRO __ea_src(t) AS
    CASE WHEN __ea_kind(t) <> 'x' THEN '"' || replace(t, '"', '""') || '"' ELSE t END;
-- The rows of a table, or those a filter := predicate selects: the statement is built by
-- _ea_rows_sql as a parse tree (the name quoted as data, the predicate parsed as one
-- expression), so neither a table name nor a filter, bound as a parameter or written
-- out, can add SQL to it. A store view's name is one name even where it holds dots.
CREATE OR REPLACE MACRO __ea_rows(table_name, filter) AS TABLE
    SELECT * FROM query(_ea_rows_sql(table_name, CAST(filter AS VARCHAR), __ea_kind(table_name) <> 'x'));
CREATE OR REPLACE MACRO __ea_metric_of(t, metric) AS
    lower(coalesce(metric, getvariable('__ea_metric')[t], 'cosine'));

-- The query vector is bound once (__q): a scalar-subquery argument pasted into every
-- distance expression would otherwise be re-planned as one cross product per use.

-- Whether knn on this name is served by the store (a store view and its vector column):
-- cosine/dot/l2 by the store's search, mahalanobis by the version's cached matrix
-- whitened once per inv_cov; everything else is an exact scan in SQL.
CREATE OR REPLACE MACRO __ea_served(t, metric, vector) AS
    __ea_kind(t) IN ('i', 's') AND vector = 'vector';

-- mahalanobis on anything else (a DuckDB table, a view with another vector column): the
-- vectors go to one UDF call as a list, which whitens once and ranks like l2. A per-row
-- UDF would receive the d x d inv_cov once per row (2,040 x 384 took 8-20 s).
CREATE OR REPLACE MACRO __ea_maha_scan(t, metric, vector) AS
    NOT __ea_served(t, metric, vector) AND __ea_metric_of(t, metric) = 'mahalanobis';

CREATE OR REPLACE MACRO knn(table_name, query_vector, k, metric := NULL, vector := 'vector',
                            inv_cov := NULL, use_index := true, filter := NULL) AS TABLE
    -- (__ea_k refuses a bad k and __ea_qv a NULL vector here, where every arm reads the
    -- query vector.)
    WITH __q AS MATERIALIZED (SELECT CASE WHEN __ea_k('knn', k) > 0 THEN __ea_qv('knn', query_vector) END
                              AS __qv),
    -- Store views: the store's search ranks (k = 0 elsewhere, since DuckDB evaluates
    -- this CTE whichever branch below survives).
    __h AS MATERIALIZED (
        SELECT unnest(_ea_knn_hits(table_name, (SELECT CAST(__qv AS FLOAT[]) FROM __q),
                                   CASE WHEN __ea_served(table_name, metric, vector)
                                        THEN __ea_limit(k) ELSE 0 END,
                                   __ea_metric_of(table_name, metric), use_index,
                                   CASE WHEN __ea_served(table_name, metric, vector)
                                        THEN inv_cov END,
                                   CAST(filter AS VARCHAR)),
                      recursive := true)),
    -- Mahalanobis outside the store: rows numbered once (materialized, so both uses agree),
    -- ranked by one call over the list of their vectors (empty unless this arm is taken).
    __mr AS MATERIALIZED (
        SELECT *, row_number() OVER () AS __ea_pos
        FROM (SELECT *, NULL::BIGINT AS __ea_ki, NULL::VARCHAR AS __ea_ks
              FROM __ea_rows(table_name, CASE WHEN __ea_maha_scan(table_name, metric, vector)
                                              THEN filter END))
        WHERE __ea_maha_scan(table_name, metric, vector) AND COLUMNS(c -> c = vector) IS NOT NULL),
    __mh AS MATERIALIZED (
        SELECT unnest(_ea_knn_rows((SELECT CAST(__qv AS DOUBLE[]) FROM __q),
                                   list(CAST(COLUMNS(c -> c = vector) AS DOUBLE[]) ORDER BY __ea_pos),
                                   __ea_limit(k), inv_cov), recursive := true)
        FROM __mr
        HAVING count(*) > 0)
    SELECT * EXCLUDE (__ea_ki, __ea_ks) FROM (
        -- store view, integer key: the key equality becomes a join filter that DuckDB pushes
        -- into the view's scan, which answers it from the version's key index
        SELECT __t.*, __h.distance, __h.rank
        FROM (SELECT *, NULL::BIGINT AS __ea_ki, NULL::VARCHAR AS __ea_ks
              FROM query_table(__ea_src(table_name))) __t, __h
        WHERE __ea_served(table_name, metric, vector) AND __ea_kind(table_name) = 'i'
          AND COLUMNS(c -> c = CASE WHEN __ea_kind(table_name) = 'i'
                                    THEN getvariable('__ea_key')[table_name] ELSE '__ea_ki' END) = __h.ki
        UNION ALL
        -- store view, string key
        SELECT __t.*, __h.distance, __h.rank
        FROM (SELECT *, NULL::BIGINT AS __ea_ki, NULL::VARCHAR AS __ea_ks
              FROM query_table(__ea_src(table_name))) __t, __h
        WHERE __ea_served(table_name, metric, vector) AND __ea_kind(table_name) = 's'
          AND COLUMNS(c -> c = CASE WHEN __ea_kind(table_name) = 's'
                                    THEN getvariable('__ea_key')[table_name] ELSE '__ea_ks' END) = __h.ks
        UNION ALL
        SELECT __mr.* EXCLUDE (__ea_pos), __mh.distance, __mh.rank
        FROM __mr JOIN __mh ON __mr.__ea_pos = __mh.r
        WHERE __ea_maha_scan(table_name, metric, vector)
        UNION ALL
        -- anything else: exact scan in SQL, distances by one vectorised UDF (see _ea_distance)
        SELECT * EXCLUDE (__qv), CAST(row_number() OVER (ORDER BY distance) AS INTEGER) AS rank
        FROM (SELECT *, _ea_distance(CAST(COLUMNS(c -> c = vector) AS DOUBLE[]), CAST(__qv AS DOUBLE[]),
                                     __ea_metric_of(table_name, metric), inv_cov) AS distance
              FROM (SELECT *, NULL::BIGINT AS __ea_ki, NULL::VARCHAR AS __ea_ks
                    FROM __ea_rows(table_name, CASE WHEN NOT __ea_served(table_name, metric, vector)
                                                    THEN filter END)), __q
              WHERE NOT __ea_served(table_name, metric, vector)
                AND NOT __ea_maha_scan(table_name, metric, vector)
                AND COLUMNS(c -> c = vector) IS NOT NULL
              ORDER BY distance NULLS LAST
              LIMIT __ea_limit(k)))
    ORDER BY rank;

-- How similarity_join collects a side's vectors and which UDF ranks them: native.sql
-- swaps these for the ea_vec extension's packed float32 BLOB (no per-row list copy).
CREATE OR REPLACE MACRO __ea_vectors(v) AS list(CAST(v AS FLOAT[]));
CREATE OR REPLACE MACRO __ea_topk_call(l, r, k, metric, inv_cov, approximate) AS
    _ea_topk(l, r, k, metric, inv_cov, approximate);
CREATE OR REPLACE MACRO __ea_topk_store_call(l, view, keys, k, metric, inv_cov, approximate) AS
    _ea_topk_store(l, view, keys, k, metric, inv_cov, approximate);
-- (A filtered right side goes the general way: its rows are chosen in SQL.)
CREATE OR REPLACE MACRO __ea_store_right(t, vector, flt) AS
    __ea_kind(t) <> 'x' AND vector = 'vector' AND flt IS NULL;

CREATE OR REPLACE MACRO similarity_join(left_table, right_table, k, key := 'id', vector := 'vector',
                                        left_key := NULL, right_key := NULL, metric := NULL,
                                        inv_cov := NULL, approximate := false,
                                        left_filter := NULL, right_filter := NULL) AS TABLE
    WITH __l AS (
        SELECT list(__k) AS __k, __ea_vectors(__v) AS __v
        FROM (SELECT COLUMNS(c -> c = coalesce(left_key, key)) AS __k, COLUMNS(c -> c = vector) AS __v
              FROM __ea_rows(left_table, left_filter))
        WHERE __v IS NOT NULL),
    -- A store view on the right: its keys (the vectors come from Lance, cached per version).
    __rk AS (
        SELECT list(__k) AS __k, list(CAST(__k AS VARCHAR)) AS __ks
        FROM (SELECT COLUMNS(c -> c = coalesce(right_key, key)) AS __k, COLUMNS(c -> c = vector) AS __v
              FROM __ea_rows(right_table, right_filter))
        WHERE __v IS NOT NULL AND __ea_store_right(right_table, vector, right_filter)),
    -- Anything else: keys and vectors from one aggregation, so they stay aligned.
    __rv AS (
        SELECT list(__k) AS __k, __ea_vectors(__v) AS __v
        FROM (SELECT COLUMNS(c -> c = coalesce(right_key, key)) AS __k, COLUMNS(c -> c = vector) AS __v
              FROM __ea_rows(right_table, right_filter))
        WHERE __v IS NOT NULL AND NOT __ea_store_right(right_table, vector, right_filter)),
    __h AS (
        SELECT unnest(CASE WHEN __ea_store_right(right_table, vector, right_filter)
                           THEN __ea_topk_store_call(__l.__v, right_table, __rk.__ks,
                                                     __ea_k('similarity_join', k),
                                                     __ea_metric_of(right_table, metric), inv_cov,
                                                     approximate)
                           ELSE __ea_topk_call(__l.__v, __rv.__v, __ea_k('similarity_join', k),
                                               __ea_metric_of(right_table, metric),
                                               inv_cov, approximate) END, recursive := true)
        FROM __l, __rk, __rv),
    -- Hits carry list positions; keys are joined back by position (indexing the key list
    -- once per hit copied it into every row of a cross product: ~160 ms for 10k hits).
    __lk AS (SELECT unnest(__k) AS key, generate_subscripts(__k, 1) AS pos FROM __l),
    __rkk AS (
        SELECT unnest(__k) AS key, generate_subscripts(__k, 1) AS pos
        FROM (SELECT CASE WHEN __ea_store_right(right_table, vector, right_filter) THEN __rk.__k ELSE __rv.__k END AS __k
              FROM __rk, __rv))
    SELECT __lk.key AS left_key, __rkk.key AS right_key, __h.distance AS distance, __h.rank AS rank
    FROM __h JOIN __lk ON __lk.pos = __h.l JOIN __rkk ON __rkk.pos = __h.r
    ORDER BY 1, 4;

-- hybrid_search('view', 'query text', k): BM25 over the view's full-text index and the
-- vector search (the text embedded with the view's model) fused by reciprocal rank:
-- the view's columns plus distance, text_score (BM25, NULL for rows the text search did
-- not return), score (fused) and rank. mode := 'text' is BM25 alone (no model needed);
-- filter := is a predicate on the view's columns; text_weight := / vector_weight :=
-- weigh the two rankings (default 1 each; see embed_assets.store.Fusion).
CREATE OR REPLACE MACRO hybrid_search(table_name, query_text, k, mode := 'hybrid', filter := NULL,
                                      text_weight := 1.0, vector_weight := 1.0) AS TABLE
    WITH __h AS MATERIALIZED (
        SELECT unnest(_ea_text_hits(table_name, query_text, __ea_k('hybrid_search', k), mode,
                                    CAST(filter AS VARCHAR),
                                    text_weight, vector_weight), recursive := true))
    SELECT * EXCLUDE (__ea_ki, __ea_ks) FROM (
        SELECT __t.*, __h.distance, __h.text_score, __h.score, __h.rank
        FROM (SELECT *, NULL::BIGINT AS __ea_ki, NULL::VARCHAR AS __ea_ks
              FROM query_table(__ea_src(table_name))) __t, __h
        WHERE __ea_kind(table_name) = 'i'
          AND COLUMNS(c -> c = CASE WHEN __ea_kind(table_name) = 'i'
                                    THEN getvariable('__ea_key')[table_name] ELSE '__ea_ki' END) = __h.ki
        UNION ALL
        SELECT __t.*, __h.distance, __h.text_score, __h.score, __h.rank
        FROM (SELECT *, NULL::BIGINT AS __ea_ki, NULL::VARCHAR AS __ea_ks
              FROM query_table(__ea_src(table_name))) __t, __h
        WHERE __ea_kind(table_name) = 's'
          AND COLUMNS(c -> c = CASE WHEN __ea_kind(table_name) = 's'
                                    THEN getvariable('__ea_key')[table_name] ELSE '__ea_ks' END) = __h.ks)
    ORDER BY rank;
