-- case: vec_add lists
SELECT vec_add([1.0, 2.0, 3.0], [0.5, -1.0, 2.0]);
-- expect: [[[1.5, 1.0, 5.0]]]

-- case: vec_add arrays keep float precision
SELECT vec_add([1, 2, 3]::FLOAT[3], [0.25, 0.25, 0.25]::FLOAT[3]);
-- expect: [[[1.25, 2.25, 3.25]]]

-- case: vec_sub
SELECT vec_sub([1.0, 2.0, 3.0], [0.5, -1.0, 2.0]);
-- expect: [[[0.5, 3.0, 1.0]]]

-- case: vec_scale
SELECT vec_scale([1.0, -2.0, 0.5], 3.0);
-- expect: [[[3.0, -6.0, 1.5]]]

-- case: vec_dot
SELECT vec_dot([1.0, 2.0, 3.0], [4.0, -5.0, 6.0]);
-- expect: [[12.0]]

-- case: vec_norm
SELECT vec_norm([3.0, 4.0]), vec_norm([1.0, 1.0, 1.0, 1.0]);
-- expect: [[5.0, 2.0]]

-- case: vec_normalize
SELECT vec_normalize([3.0, 4.0]);
-- expect: [[[0.6, 0.8]]]

-- case: vec_cosine
SELECT vec_cosine([1.0, 0.0], [1.0, 1.0]), vec_cosine([1.0, 2.0], [-1.0, -2.0]);
-- expect: [[0.7071067811865476, -1.0]]

-- case: vec_l2
SELECT vec_l2([0.0, 0.0, 0.0], [1.0, 2.0, 2.0]);
-- expect: [[3.0]]

-- case: vec_distance under each metric
SELECT vec_distance([1.0, 0.0], [0.6, 0.8]),
       vec_distance([1.0, 0.0], [0.6, 0.8], metric := 'dot'),
       vec_distance([1.0, 0.0], [0.6, 0.8], metric := 'l2'),
       vec_distance([1.0, 0.0], [0.6, 0.8], metric := 'mahalanobis', inv_cov := [[4.0, 0.0], [0.0, 1.0]]);
-- expect: [[0.4, 0.4, 0.8944271909999159, 1.1313708498984762]]

-- case: vec_mahalanobis with identity = Euclidean
SELECT vec_mahalanobis([1.0, 2.0, 3.0], [0.0, 0.0, 1.0], [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]);
-- expect: [[3.0]]

-- case: mat_vec
SELECT mat_vec([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]], [1.0, -1.0]);
-- expect: [[[-1.0, -1.0, -1.0]]]

-- case: NULL vector gives NULL (a bare NULL literal needs a type, as for DuckDB's list_* functions)
SELECT vec_add(NULL::FLOAT[], [1.0]), vec_dot([1.0], NULL::FLOAT[]), vec_norm(NULL::FLOAT[]), vec_normalize(NULL::FLOAT[]), vec_cosine(NULL::FLOAT[], [1.0]), vec_l2([1.0], NULL::DOUBLE[]), vec_scale([1.0], NULL);
-- expect: [[null, null, null, null, null, null, null]]

-- case: NULL element propagates in element-wise macros
SELECT vec_add([1.0, NULL, 3.0], [1.0, 1.0, 1.0]);
-- expect: [[[2.0, null, 4.0]]]

-- case: zero vector has no direction
SELECT vec_normalize([0.0, 0.0]), vec_cosine([0.0, 0.0], [1.0, 1.0]);
-- expect: [[null, null]]

-- case: a scalar subquery argument works (no lambda captures it)
WITH dirs AS (SELECT 'dev' AS name, [1.0, 2.0, 3.0] AS direction)
SELECT vec_add([1.0, 1.0, 1.0], (SELECT direction FROM dirs WHERE name = 'dev')),
       vec_scale([1.0, 2.0], (SELECT 0.5)),
       vec_normalize((SELECT [3.0, 4.0])),
       vec_cosine((SELECT direction FROM dirs), [1.0, 2.0, 3.0]);
-- expect: [[[2.0, 3.0, 4.0], [0.5, 1.0], [0.6, 0.8], 1.0]]

-- case: dimension mismatch is an error, never a truncation
SELECT vec_add([1.0, 2.0, 3.0], [1.0, 2.0]);
-- error: vec_add: dimension mismatch (3 vs 2)

-- case: vec_sub mismatch
SELECT vec_sub([1.0], [1.0, 2.0]);
-- error: vec_sub: dimension mismatch (1 vs 2)

-- case: vec_dot mismatch
SELECT vec_dot([1.0, 2.0], [1.0, 2.0, 3.0]);
-- error: vec_dot: dimension mismatch (2 vs 3)

-- case: vec_cosine mismatch
SELECT vec_cosine([1.0, 2.0], [1.0]);
-- error: vec_cosine: dimension mismatch (2 vs 1)

-- case: vec_l2 mismatch
SELECT vec_l2([1.0, 2.0], [1.0]);
-- error: vec_l2: dimension mismatch (2 vs 1)

-- case: unknown metric
SELECT vec_distance([1.0], [1.0], metric := 'hamming');
-- error: unknown metric 'hamming'

-- case: reductions refuse NULL elements
SELECT vec_dot([1.0, NULL], [1.0, 1.0]);
-- error: can not contain NULL values
