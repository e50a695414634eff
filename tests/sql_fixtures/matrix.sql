-- case: vec_covariance is the sample covariance (NULL rows skipped)
SELECT vec_covariance(v)
FROM (VALUES ([1.0, 2.0]), ([3.0, 5.0]), (NULL), ([5.0, 2.0])) t(v);
-- expect: [[[[4.0, 0.0], [0.0, 3.0]]]]

-- case: vec_covariance by group; a group of one vector gives NULL
SELECT g, vec_covariance(v)
FROM (VALUES ('a', [1.0, 0.0]), ('a', [3.0, 2.0]), ('b', [1.0, 1.0])) t(g, v)
GROUP BY g ORDER BY g;
-- expect: [["a", [[2.0, 2.0], [2.0, 2.0]]], ["b", null]]

-- case: list_vec_covariance over a window (the window form of vec_covariance)
SELECT id, list_vec_covariance(list(v) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW))
FROM (VALUES (1, [0.0, 0.0]), (2, [2.0, 4.0]), (3, [2.0, 0.0])) t(id, v)
ORDER BY id;
-- expect: [[1, null], [2, [[2.0, 4.0], [4.0, 8.0]]], [3, [[0.0, 0.0], [0.0, 8.0]]]]

-- case: vec_covariance with mixed dimensions raises
SELECT list_vec_covariance([[1.0, 2.0], [1.0], [0.0, 0.0]]);
-- error: vec_covariance: dimension mismatch

-- case: mat_inverse of a diagonal and of a matrix that needs a row swap
SELECT mat_inverse([[2.0, 0.0], [0.0, 4.0]]), mat_inverse([[0.0, 2.0], [1.0, 0.0]]),
       mat_inverse([[4.0, 7.0], [2.0, 6.0]]);
-- expect: [[[[0.5, 0.0], [0.0, 0.25]], [[0.0, 1.0], [0.5, 0.0]], [[0.6, -0.7], [-0.2, 0.4]]]]

-- case: mat_inverse of a non-square matrix raises
SELECT mat_inverse([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
-- error: mat_inverse: matrix must be square

-- case: Mahalanobis with the inverse covariance estimated in the same statement
WITH pts(v) AS (VALUES ([1.0, 2.0]), ([3.0, 5.0]), ([5.0, 2.0])),
     ic AS (SELECT mat_inverse(vec_covariance(v)) AS m FROM pts)
SELECT vec_mahalanobis([3.0, 2.0], [1.0, 2.0], (SELECT m FROM ic));
-- expect: [[1.0]]
