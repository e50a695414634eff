-- case: vec_mean and vec_sum with GROUP BY (NULL rows skipped)
SELECT g, vec_mean(v), vec_sum(v)
FROM (VALUES ('a', [1.0, 2.0]), ('a', [3.0, 6.0]), ('b', [5.0, 5.0]), ('b', NULL)) t(g, v)
GROUP BY g ORDER BY g;
-- expect: [["a", [2.0, 4.0], [4.0, 8.0]], ["b", [5.0, 5.0], [5.0, 5.0]]]

-- case: vec_mean over FLOAT[n] arrays
SELECT vec_mean(v) FROM (VALUES ([1, 2, 3]::FLOAT[3]), ([3, 2, 1]::FLOAT[3])) t(v);
-- expect: [[[2.0, 2.0, 2.0]]]

-- case: a group with only NULL vectors gives NULL
SELECT vec_mean(v), vec_sum(v) FROM (VALUES (NULL::FLOAT[]), (NULL::FLOAT[])) t(v);
-- expect: [[null, null]]

-- case: list_vec_mean / list_vec_sum on lists (NULL entries skipped, empty -> NULL)
SELECT list_vec_mean([[1.0, 2.0], [3.0, 4.0], NULL]), list_vec_sum([[1.0, 2.0], [3.0, 4.0]]),
       list_vec_mean([]::FLOAT[][]), list_vec_mean(NULL::FLOAT[][]);
-- expect: [[[2.0, 3.0], [4.0, 6.0], null, null]]

-- case: NULL element makes that position NULL in the mean
SELECT list_vec_mean([[1.0, NULL], [3.0, 4.0]]);
-- expect: [[[2.0, null]]]

-- case: mean of the last 2 items with a window
SELECT id, list_vec_mean(list(v) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW))
FROM (VALUES (1, [2.0, 0.0]), (2, [4.0, 2.0]), (3, [0.0, 4.0])) t(id, v)
ORDER BY id;
-- expect: [[1, [2.0, 0.0]], [2, [3.0, 1.0]], [3, [2.0, 3.0]]]

-- case: mixed dimensions in one group raise
SELECT vec_mean(v) FROM (VALUES ([1.0, 2.0]), ([1.0, 2.0, 3.0])) t(v);
-- error: vec_mean: dimension mismatch
