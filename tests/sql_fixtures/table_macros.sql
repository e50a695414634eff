-- Tables used by every case of this file (run first, in one session).
-- setup
CREATE OR REPLACE TABLE items AS SELECT * FROM (VALUES (1, [1.0, 0.0]), (2, [0.0, 1.0]), (3, [1.0, 0.5]), (4, [-1.0, 0.2])) t(id, vector);
CREATE OR REPLACE TABLE other AS SELECT * FROM (VALUES (10, 'x', [0.9, 0.1]::FLOAT[2]), (20, 'y', [0.1, 0.9]::FLOAT[2]), (30, 'z', [-1.0, -1.0]::FLOAT[2])) t(oid, label, emb);

-- case: knn on a plain table: cosine by default
SELECT id, distance, rank FROM knn('items', [1.0, 0.1], 2);
-- expect: [[1, 0.0049628098, 1], [3, 0.0655122651, 2]]

-- case: knn with metric l2
SELECT id, distance, rank FROM knn('items', [1.0, 0.1], 3, metric := 'l2');
-- expect: [[1, 0.1, 1], [3, 0.4, 2], [2, 1.3453624047, 3]]

-- case: knn with metric dot
SELECT id, distance, rank FROM knn('items', [1.0, 0.1], 3, metric := 'dot');
-- expect: [[3, -0.05, 1], [1, 0.0, 2], [2, 0.9, 3]]

-- case: knn keeps the table's columns
SELECT id, vector, rank FROM knn('items', [0.0, 1.0], 1);
-- expect: [[2, [0.0, 1.0], 1]]

-- case: knn with k larger than the table
SELECT count(*) FROM knn('items', [0.0, 1.0], 100);
-- expect: [[4]]

-- case: similarity_join self, k=2
SELECT * FROM similarity_join('items', 'items', 2) ORDER BY left_key, rank;
-- expect: [[1, 1, 0.0, 1], [1, 3, 0.105572809, 2], [2, 2, 0.0, 1], [2, 3, 0.5527864045, 2], [3, 3, 0.0, 1], [3, 1, 0.105572809, 2], [4, 4, 0.0, 1], [4, 2, 0.8038838649, 2]]

-- case: similarity_join with another key and vector column, metric l2
SELECT * FROM similarity_join('other', 'other', 1, key := 'oid', vector := 'emb', metric := 'l2') ORDER BY left_key, rank;
-- expect: [[10, 10, 0.0, 1], [20, 20, 0.0, 1], [30, 30, 0.0, 1]]

-- case: knn on a FLOAT[n] column with another name
SELECT oid, label, distance, rank FROM knn('other', [0.0, 1.0], 1, vector := 'emb', metric := 'l2');
-- expect: [[20, "y", 0.14142135623730953, 1]]

-- case: knn query of the wrong dimension
SELECT * FROM knn('items', [1.0, 0.0, 0.0], 1);
-- error: dimension mismatch
