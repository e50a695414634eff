-- embed_assets: vec_mean / vec_sum backed by the ea_vec C extension (embed_assets/native).
--
-- Loaded by embed_assets.connect() after store.sql, only when the extension loaded.
-- Same results as vectors.sql: NULL vectors are skipped, a group or list with no vector
-- gives NULL, a NULL element gives NULL at its position, mixed dimensions raise
-- "vec_mean: dimension mismatch (A vs B)". Sums accumulate in DOUBLE.
CREATE OR REPLACE MACRO vec_mean(v) AS __ea_vec_mean(v);
CREATE OR REPLACE MACRO vec_sum(v) AS __ea_vec_sum(v);
CREATE OR REPLACE MACRO list_vec_mean(vs) AS list_aggregate(vs, '__ea_vec_mean');
CREATE OR REPLACE MACRO list_vec_sum(vs) AS list_aggregate(vs, '__ea_vec_sum');
-- similarity_join: each side's vectors as one packed float32 BLOB (see store.sql).
CREATE OR REPLACE MACRO __ea_vectors(v) AS __ea_vec_pack(v);
CREATE OR REPLACE MACRO __ea_topk_call(l, r, k, metric, inv_cov, approximate) AS
    _ea_topk_packed(l, r, k, metric, inv_cov, approximate);
CREATE OR REPLACE MACRO __ea_topk_store_call(l, view, keys, k, metric, inv_cov, approximate) AS
    _ea_topk_store_packed(l, view, keys, k, metric, inv_cov, approximate);
