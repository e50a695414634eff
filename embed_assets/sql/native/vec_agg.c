/*
 * ea_vec: element-wise vector aggregates for DuckDB (C extension API, stable v1.2.0 surface).
 *
 *   ea_vec_sum(v)  / ea_vec_mean(v)
 *     v : FLOAT[] | DOUBLE[] | FLOAT[N] | DOUBLE[N]      ->  DOUBLE[]
 *
 * Semantics (same as the SQL/Python vec_sum / vec_mean):
 *   - NULL vectors (row value NULL) are skipped;
 *   - a group without any non-NULL vector gives NULL;
 *   - a NULL element at position i in any vector of the group makes position i NULL;
 *   - the mean divides by the number of non-NULL vectors;
 *   - vectors of different lengths in one group raise
 *     "vec_mean: dimension mismatch (A vs B)" (or "vec_sum: ...").
 *
 *   ea_vec_pack(v)
 *     v : FLOAT[] | DOUBLE[] | FLOAT[N] | DOUBLE[N]      ->  BLOB
 *     (all non-NULL vectors of the group as float32 rows behind an 8-byte header; see its section)
 *
 * Accumulation is in double.  State = pointer to a heap array of doubles, count, dim and
 * a (lazily allocated) per-position NULL mask; the destructor frees both arrays.
 *
 * Build: see build.py (gcc -O3 -march=x86-64-v2 -shared -fPIC, then the metadata footer).
 * duckdb.h / duckdb_extension.h are vendored unmodified from duckdb tag v1.5.5 (src/include/);
 * the extension targets the stable C extension API v1.2.0 (the header's default), so the
 * footer's version field is "v1.2.0" (DuckDB accepts it when its own C API is >= v1.2.0; only
 * tested with 1.5.5) for the platform written in the footer.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* mremap (__ea_vec_pack's buffers) */
#endif
#define DUCKDB_EXTENSION_NAME ea_vec
#include "duckdb_extension.h"

/* the API struct itself is defined by DUCKDB_EXTENSION_ENTRYPOINT at the bottom */
DUCKDB_EXTENSION_EXTERN

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	double *sum;       /* dim doubles, NULL until the first non-NULL vector */
	uint8_t *nullmask; /* dim bytes (1 = some NULL element seen there), NULL if none ever */
	int64_t count;     /* number of non-NULL vectors accumulated */
	int64_t dim;       /* -1 = not set yet */
	void *reg_key;     /* address this state was counted under at init (see live-state filter) */
} VecState;

enum { KIND_SUM = 0, KIND_MEAN = 1 };

static const char *fn_name(int kind) {
	return kind == KIND_MEAN ? "vec_mean" : "vec_sum";
}

/* ------------------------------------------------------------------------------------ */
/* live-state filter: guard against DuckDB C-API bug duckdb/duckdb#21537                 */
/* ------------------------------------------------------------------------------------ */
/*
 * DuckDB (1.5.5 and, as of this writing, main) hands the C update callback a *constant* state
 * vector in two places: the window "constant" aggregator (OVER (), whole-partition frames) and
 * ORDER BY inside an aggregate (sorted aggregates).  The callback then gets a one-element buffer
 * but is told there are `count` states, so states[1..count) are garbage pointers (a plain C-API
 * aggregate segfaults on `SELECT agg(x) OVER () ...`).  In both places every row belongs to
 * states[0].  The C API does not expose the real length, so we track which addresses hold live
 * states (initialised, not yet destroyed) in a lock-free counting filter and look at
 * states[1..3] *without dereferencing them*: if one of them is neither states[0] nor a live
 * state but states[0] is, every row of the chunk is routed to states[0].
 *
 * The filter is an array of atomic counters indexed by a hash of the address: init increments,
 * destroy decrements, so a live state is never reported missing; an unrelated address may be
 * reported live when it collides with a live state (then the guard does not fire and the
 * behaviour is DuckDB's original one).  DuckDB may move states with memcpy (a spilling GROUP
 * BY) and destroy them at the new address, so each state remembers the address it was counted
 * under (VecState.reg_key) and destroy decrements that one.
 * Cost: one atomic add per init and per destroy, <= 3 loads per update chunk.
 */
#define LIVE_BITS 21 /* 2M counters, 8 MiB of BSS, touched lazily */
static uint32_t g_live[1u << LIVE_BITS];

static inline size_t live_slot(const void *ptr) {
	uint64_t h = (uint64_t)(uintptr_t)ptr >> 3;
	h *= 0x9E3779B97F4A7C15ULL;
	return (size_t)(h >> (64 - LIVE_BITS));
}

static inline void live_add(const void *ptr) {
	__atomic_fetch_add(&g_live[live_slot(ptr)], 1u, __ATOMIC_RELAXED);
}

static inline void live_remove(const void *ptr) {
	__atomic_fetch_sub(&g_live[live_slot(ptr)], 1u, __ATOMIC_RELAXED);
}

static inline int live_maybe(const void *ptr) {
	uintptr_t p = (uintptr_t)ptr;
	if (p < 4096 || (p & 7)) { /* NULL-ish or misaligned: never a state */
		return 0;
	}
	return __atomic_load_n(&g_live[live_slot(ptr)], __ATOMIC_RELAXED) != 0;
}

/* ------------------------------------------------------------------------------------ */
/* state management                                                                     */
/* ------------------------------------------------------------------------------------ */

static idx_t vec_state_size(duckdb_function_info info) {
	(void)info;
	return (idx_t)sizeof(VecState);
}

static void vec_state_init(duckdb_function_info info, duckdb_aggregate_state state) {
	(void)info;
	VecState *st = (VecState *)state;
	st->sum = NULL;
	st->nullmask = NULL;
	st->count = 0;
	st->dim = -1;
	st->reg_key = st;
	live_add(st);
}

static void vec_state_destroy(duckdb_aggregate_state *states, idx_t count) {
	for (idx_t i = 0; i < count; i++) {
		VecState *st = (VecState *)states[i];
		if (!st) {
			continue;
		}
		free(st->sum);
		free(st->nullmask);
		st->sum = NULL;
		st->nullmask = NULL;
		st->count = 0;
		st->dim = -1;
		if (st->reg_key) {
			live_remove(st->reg_key);
			st->reg_key = NULL;
		}
	}
}

static void set_dim_error(duckdb_function_info info, int kind, int64_t a, int64_t b) {
	char msg[160];
	snprintf(msg, sizeof(msg), "%s: dimension mismatch (%lld vs %lld)", fn_name(kind), (long long)a, (long long)b);
	duckdb_aggregate_function_set_error(info, msg);
}

static void set_oom_error(duckdb_function_info info, int kind) {
	char msg[96];
	snprintf(msg, sizeof(msg), "%s: out of memory", fn_name(kind));
	duckdb_aggregate_function_set_error(info, msg);
}

/* First vector for this state: allocate the accumulator. Returns 0 on OOM. */
static int state_start(VecState *st, int64_t dim) {
	st->sum = (double *)calloc((size_t)(dim > 0 ? dim : 1), sizeof(double));
	if (!st->sum) {
		return 0;
	}
	st->dim = dim;
	st->count = 0;
	return 1;
}

static int state_ensure_mask(VecState *st) {
	if (!st->nullmask) {
		st->nullmask = (uint8_t *)calloc((size_t)(st->dim > 0 ? st->dim : 1), 1);
		if (!st->nullmask) {
			return 0;
		}
	}
	return 1;
}

/* ------------------------------------------------------------------------------------ */
/* validity helpers                                                                     */
/* ------------------------------------------------------------------------------------ */

static inline int row_valid(const uint64_t *validity, idx_t row) {
	return !validity || ((validity[row >> 6] >> (row & 63)) & 1ULL);
}

/* true if bits [start, start+len) are all set (or there is no mask) */
static inline int range_all_valid(const uint64_t *validity, idx_t start, idx_t len) {
	if (!validity || len == 0) {
		return 1;
	}
	idx_t end = start + len; /* exclusive */
	idx_t w0 = start >> 6, w1 = (end - 1) >> 6;
	for (idx_t w = w0; w <= w1; w++) {
		uint64_t mask = ~0ULL;
		if (w == w0) {
			mask &= ~0ULL << (start & 63);
		}
		if (w == w1 && (end & 63)) {
			mask &= ~0ULL >> (64 - (end & 63));
		}
		if ((validity[w] & mask) != mask) {
			return 0;
		}
	}
	return 1;
}

/* ------------------------------------------------------------------------------------ */
/* update                                                                               */
/* ------------------------------------------------------------------------------------ */

/* Add one vector (elements data[off .. off+dim)) to state. Returns 0 on error (already set). */
#define DEFINE_ADD_ROW(NAME, T)                                                                                        \
	static inline int NAME(duckdb_function_info info, int kind, VecState *st, const T *data,                           \
	                       const uint64_t *child_validity, idx_t off, int64_t dim) {                                   \
		if (st->dim < 0) {                                                                                             \
			if (!state_start(st, dim)) {                                                                               \
				set_oom_error(info, kind);                                                                             \
				return 0;                                                                                              \
			}                                                                                                          \
		} else if (st->dim != dim) {                                                                                   \
			set_dim_error(info, kind, st->dim, dim);                                                                   \
			return 0;                                                                                                  \
		}                                                                                                              \
		double *restrict s = st->sum;                                                                                  \
		const T *restrict x = data + off;                                                                              \
		if (range_all_valid(child_validity, off, (idx_t)dim)) {                                                        \
			for (int64_t j = 0; j < dim; j++) {                                                                        \
				s[j] += (double)x[j];                                                                                  \
			}                                                                                                          \
		} else {                                                                                                       \
			if (!state_ensure_mask(st)) {                                                                              \
				set_oom_error(info, kind);                                                                             \
				return 0;                                                                                              \
			}                                                                                                          \
			for (int64_t j = 0; j < dim; j++) {                                                                        \
				if (row_valid(child_validity, off + (idx_t)j)) {                                                       \
					s[j] += (double)x[j];                                                                              \
				} else {                                                                                               \
					st->nullmask[j] = 1;                                                                               \
				}                                                                                                      \
			}                                                                                                          \
		}                                                                                                              \
		st->count++;                                                                                                   \
		return 1;                                                                                                      \
	}

DEFINE_ADD_ROW(add_row_f32, float)
DEFINE_ADD_ROW(add_row_f64, double)

/* 1: states[] holds one real state per row.  0: DuckDB passed its constant state vector
 * (duckdb/duckdb#21537): every row belongs to states[0].  -1: states[0] is not a live state. */
static int states_layout(duckdb_aggregate_state *states, idx_t n) {
	/* Only states[1..3] are inspected (their values, never what they point to): in the buggy
	 * case DuckDB's constant vector is a small heap block, so these 24 bytes past states[0] are
	 * still readable heap memory (observed on 1.5.5: states[1] == states[0], states[2] == NULL);
	 * in the normal case they are real states of this chunk. */
	const idx_t k = n < 4 ? n : 4;
	for (idx_t i = 1; i < k; i++) {
		if (states[i] != states[0] && !live_maybe(states[i])) {
			return live_maybe(states[0]) ? 0 : -1;
		}
	}
	return 1;
}

static void set_state_error(duckdb_function_info info, int kind) {
	char msg[200];
	snprintf(msg, sizeof(msg), "%s: unexpected aggregate state vector (unsupported query shape for the ea_vec C extension)",
	         fn_name(kind));
	duckdb_aggregate_function_set_error(info, msg);
}

#define DEFINE_UPDATE_LIST(NAME, T, ADD)                                                                               \
	static inline void NAME(duckdb_function_info info, duckdb_data_chunk input, duckdb_aggregate_state *states,        \
	                        int kind) {                                                                                \
		idx_t n = duckdb_data_chunk_get_size(input);                                                                   \
		duckdb_vector vec = duckdb_data_chunk_get_vector(input, 0);                                                    \
		const uint64_t *validity = duckdb_vector_get_validity(vec);                                                    \
		const duckdb_list_entry *entries = (const duckdb_list_entry *)duckdb_vector_get_data(vec);                     \
		duckdb_vector child = duckdb_list_vector_get_child(vec);                                                       \
		const T *data = (const T *)duckdb_vector_get_data(child);                                                      \
		const uint64_t *child_validity = duckdb_vector_get_validity(child);                                            \
		const int per_row = states_layout(states, n);                                                                  \
		if (per_row < 0) {                                                                                             \
			set_state_error(info, kind);                                                                               \
			return;                                                                                                    \
		}                                                                                                              \
		for (idx_t i = 0; i < n; i++) {                                                                                \
			if (!row_valid(validity, i)) {                                                                             \
				continue;                                                                                              \
			}                                                                                                          \
			VecState *st = (VecState *)(per_row ? states[i] : states[0]);                                              \
			if (!ADD(info, kind, st, data, child_validity, (idx_t)entries[i].offset, (int64_t)entries[i].length)) {    \
				return;                                                                                                \
			}                                                                                                          \
		}                                                                                                              \
	}

#define DEFINE_UPDATE_ARRAY(NAME, T, ADD)                                                                              \
	static inline void NAME(duckdb_function_info info, duckdb_data_chunk input, duckdb_aggregate_state *states,        \
	                        int kind) {                                                                                \
		idx_t n = duckdb_data_chunk_get_size(input);                                                                   \
		duckdb_vector vec = duckdb_data_chunk_get_vector(input, 0);                                                    \
		duckdb_logical_type type = duckdb_vector_get_column_type(vec);                                                 \
		idx_t dim = duckdb_array_type_array_size(type);                                                                \
		duckdb_destroy_logical_type(&type);                                                                            \
		const uint64_t *validity = duckdb_vector_get_validity(vec);                                                    \
		duckdb_vector child = duckdb_array_vector_get_child(vec);                                                      \
		const T *data = (const T *)duckdb_vector_get_data(child);                                                      \
		const uint64_t *child_validity = duckdb_vector_get_validity(child);                                            \
		const int per_row = states_layout(states, n);                                                                  \
		if (per_row < 0) {                                                                                             \
			set_state_error(info, kind);                                                                               \
			return;                                                                                                    \
		}                                                                                                              \
		for (idx_t i = 0; i < n; i++) {                                                                                \
			if (!row_valid(validity, i)) {                                                                             \
				continue;                                                                                              \
			}                                                                                                          \
			VecState *st = (VecState *)(per_row ? states[i] : states[0]);                                              \
			if (!ADD(info, kind, st, data, child_validity, i * dim, (int64_t)dim)) {                                   \
				return;                                                                                                \
			}                                                                                                          \
		}                                                                                                              \
	}

DEFINE_UPDATE_LIST(update_list_f32, float, add_row_f32)
DEFINE_UPDATE_LIST(update_list_f64, double, add_row_f64)
DEFINE_UPDATE_ARRAY(update_array_f32, float, add_row_f32)
DEFINE_UPDATE_ARRAY(update_array_f64, double, add_row_f64)

/* concrete callbacks: one per (input layout, element type, kind) */
#define DEFINE_UPDATE_CB(NAME, IMPL, KIND)                                                                             \
	static void NAME(duckdb_function_info info, duckdb_data_chunk input, duckdb_aggregate_state *states) {             \
		IMPL(info, input, states, KIND);                                                                               \
	}

DEFINE_UPDATE_CB(sum_update_list_f32, update_list_f32, KIND_SUM)
DEFINE_UPDATE_CB(sum_update_list_f64, update_list_f64, KIND_SUM)
DEFINE_UPDATE_CB(sum_update_array_f32, update_array_f32, KIND_SUM)
DEFINE_UPDATE_CB(sum_update_array_f64, update_array_f64, KIND_SUM)
DEFINE_UPDATE_CB(mean_update_list_f32, update_list_f32, KIND_MEAN)
DEFINE_UPDATE_CB(mean_update_list_f64, update_list_f64, KIND_MEAN)
DEFINE_UPDATE_CB(mean_update_array_f32, update_array_f32, KIND_MEAN)
DEFINE_UPDATE_CB(mean_update_array_f64, update_array_f64, KIND_MEAN)

/* ------------------------------------------------------------------------------------ */
/* combine (source states are left untouched: window segment trees reuse them)         */
/* ------------------------------------------------------------------------------------ */

static inline void vec_combine_impl(duckdb_function_info info, duckdb_aggregate_state *source,
                                    duckdb_aggregate_state *target, idx_t count, int kind) {
	for (idx_t i = 0; i < count; i++) {
		const VecState *src = (const VecState *)source[i];
		VecState *tgt = (VecState *)target[i];
		if (src->dim < 0 || src->count == 0) {
			continue;
		}
		if (tgt->dim < 0) {
			if (!state_start(tgt, src->dim)) {
				set_oom_error(info, kind);
				return;
			}
		} else if (tgt->dim != src->dim) {
			set_dim_error(info, kind, tgt->dim, src->dim);
			return;
		}
		const int64_t dim = src->dim;
		double *restrict s = tgt->sum;
		const double *restrict x = src->sum;
		for (int64_t j = 0; j < dim; j++) {
			s[j] += x[j];
		}
		if (src->nullmask) {
			if (!state_ensure_mask(tgt)) {
				set_oom_error(info, kind);
				return;
			}
			for (int64_t j = 0; j < dim; j++) {
				tgt->nullmask[j] |= src->nullmask[j];
			}
		}
		tgt->count += src->count;
	}
}

static void sum_combine(duckdb_function_info info, duckdb_aggregate_state *source, duckdb_aggregate_state *target,
                        idx_t count) {
	vec_combine_impl(info, source, target, count, KIND_SUM);
}

static void mean_combine(duckdb_function_info info, duckdb_aggregate_state *source, duckdb_aggregate_state *target,
                         idx_t count) {
	vec_combine_impl(info, source, target, count, KIND_MEAN);
}

/* ------------------------------------------------------------------------------------ */
/* finalize: DOUBLE[] (LIST of DOUBLE)                                                  */
/* ------------------------------------------------------------------------------------ */

static inline void vec_finalize_impl(duckdb_function_info info, duckdb_aggregate_state *source, duckdb_vector result,
                                     idx_t count, idx_t offset, int kind) {
	(void)info;
	idx_t base = duckdb_list_vector_get_size(result);
	idx_t total = 0;
	for (idx_t i = 0; i < count; i++) {
		const VecState *st = (const VecState *)source[i];
		if (st->dim >= 0 && st->count > 0) {
			total += (idx_t)st->dim;
		}
	}
	if (duckdb_list_vector_reserve(result, base + total) != DuckDBSuccess) {
		set_oom_error(info, kind);
		return;
	}
	duckdb_vector child = duckdb_list_vector_get_child(result);
	double *cdata = (double *)duckdb_vector_get_data(child);
	duckdb_list_entry *entries = (duckdb_list_entry *)duckdb_vector_get_data(result);
	uint64_t *child_validity = NULL;
	idx_t pos = base;
	for (idx_t i = 0; i < count; i++) {
		const VecState *st = (const VecState *)source[i];
		idx_t row = offset + i;
		if (st->dim < 0 || st->count == 0) {
			duckdb_vector_ensure_validity_writable(result);
			duckdb_validity_set_row_invalid(duckdb_vector_get_validity(result), row);
			entries[row].offset = pos;
			entries[row].length = 0;
			continue;
		}
		const int64_t dim = st->dim;
		entries[row].offset = pos;
		entries[row].length = (uint64_t)dim;
		double *restrict out = cdata + pos;
		const double *restrict s = st->sum;
		if (kind == KIND_MEAN) {
			const double n = (double)st->count;
			for (int64_t j = 0; j < dim; j++) {
				out[j] = s[j] / n;
			}
		} else {
			memcpy(out, s, (size_t)dim * sizeof(double));
		}
		if (st->nullmask) {
			if (!child_validity) {
				duckdb_vector_ensure_validity_writable(child);
				child_validity = duckdb_vector_get_validity(child);
			}
			for (int64_t j = 0; j < dim; j++) {
				if (st->nullmask[j]) {
					out[j] = 0.0;
					duckdb_validity_set_row_invalid(child_validity, pos + (idx_t)j);
				}
			}
		}
		pos += (idx_t)dim;
	}
	duckdb_list_vector_set_size(result, pos);
}

static void sum_finalize(duckdb_function_info info, duckdb_aggregate_state *source, duckdb_vector result, idx_t count,
                         idx_t offset) {
	vec_finalize_impl(info, source, result, count, offset, KIND_SUM);
}

static void mean_finalize(duckdb_function_info info, duckdb_aggregate_state *source, duckdb_vector result,
                          idx_t count, idx_t offset) {
	vec_finalize_impl(info, source, result, count, offset, KIND_MEAN);
}

/* ------------------------------------------------------------------------------------ */
/* __ea_vec_pack(v) -> BLOB                                                             */
/* ------------------------------------------------------------------------------------ */
/*
 * Packs every non-NULL vector of the group, in the order DuckDB feeds them (update order,
 * then combine order: combine appends the source's rows after the target's, exactly like
 * list()), into one BLOB:
 *     uint32 dim (LE) | uint32 reserved = 0 | count x dim float32 (LE), row-major.
 * DOUBLE inputs are converted to float32.  NULL vectors are skipped; a group without any
 * non-NULL vector gives NULL; a NULL element raises "similarity_join: vectors contain NULL
 * elements"; vectors of different lengths raise "similarity_join: dimension mismatch (A vs B)".
 * Rows of list(x) and __ea_vec_pack(v) in one SELECT line up because DuckDB feeds every
 * aggregate of a SELECT the same chunks and combines their states pairwise in the same order
 * (the ungrouped aggregate combines each thread's states into the global ones under one lock).
 * The byte layout assumes a little-endian host (x86-64 / arm64).
 *
 * Buffer: PackBuf header + the BLOB bytes (its 8-byte header is written when the buffer is
 * created, so finalize hands DuckDB one contiguous block).  It grows by doubling; from
 * PACK_MMAP_MIN on it is an anonymous mapping (MADV_HUGEPAGE, grown with mremap: no copy,
 * and 2 MiB page faults instead of 4 KiB ones -- page faults dominate at 46 MB).
 * Combine leaves the source state untouched (the C API cannot tell a destructive combine from a
 * window segment-tree one), yet avoids copying into an empty target: the target then shares
 * the source's buffer (reference count).  A state appends in place only while it is the sole
 * owner; otherwise it copies its view first (copy-on-write).  Each state reads only its own
 * prefix [0, len) of a buffer, which no other owner ever rewrites.
 */
#ifndef PACK_HAVE_MMAP /* -DPACK_HAVE_MMAP=0: malloc only (e.g. for AddressSanitizer runs) */
#if defined(__unix__) || defined(__APPLE__)
#define PACK_HAVE_MMAP 1
#else
#define PACK_HAVE_MMAP 0
#endif
#endif
#if PACK_HAVE_MMAP
#include <sys/mman.h>
#endif
#if PACK_HAVE_MMAP && defined(__linux__) && defined(MREMAP_MAYMOVE)
#define PACK_HAVE_MREMAP 1
#else
#define PACK_HAVE_MREMAP 0
#endif

#define PACK_HEADER 8
#define PACK_MIN_CAP ((size_t)256)
#define PACK_MMAP_MIN ((size_t)2 << 20) /* mappings from 2 MiB on, whole 2 MiB multiples */

typedef struct {
	uint32_t refs;   /* number of states using this buffer (atomic) */
	uint32_t mapped; /* 1: anonymous mapping of `size` bytes, 0: malloc */
	size_t size;     /* bytes allocated, this header included */
	size_t cap;      /* bytes available for the BLOB (= size - sizeof(PackBuf)) */
	size_t pad;
} PackBuf;

#define PACKBUF_DATA(b) ((uint8_t *)(b) + sizeof(PackBuf))

typedef struct {
	PackBuf *buf;  /* NULL until the first vector */
	size_t len;    /* BLOB bytes of this state (header included) */
	int64_t count; /* number of vectors packed */
	int64_t dim;   /* -1 = not set yet */
	void *reg_key; /* see live-state filter */
} PackState;

static void packbuf_free(PackBuf *b) {
#if PACK_HAVE_MMAP
	if (b->mapped) {
		munmap(b, b->size);
		return;
	}
#endif
	free(b);
}

static void packbuf_release(PackBuf *b) {
	if (b && __atomic_sub_fetch(&b->refs, 1u, __ATOMIC_ACQ_REL) == 0) {
		packbuf_free(b);
	}
}

static inline size_t packbuf_round(size_t size) {
	return size >= PACK_MMAP_MIN && PACK_HAVE_MMAP ? (size + PACK_MMAP_MIN - 1) & ~(PACK_MMAP_MIN - 1) : size;
}

#if PACK_HAVE_MMAP
/* old == NULL: a new mapping; else (PACK_HAVE_MREMAP only) old's mapping resized, contents kept */
static PackBuf *packbuf_map(PackBuf *old, size_t size) {
	void *p;
#if PACK_HAVE_MREMAP
	if (old) {
		p = mremap(old, old->size, size, MREMAP_MAYMOVE);
	} else
#endif
	{
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	if (p == MAP_FAILED) {
		return NULL;
	}
#ifdef MADV_HUGEPAGE
	madvise(p, size, MADV_HUGEPAGE); /* best effort */
#endif
	return (PackBuf *)p;
}
#endif

/* A buffer of at least `need` BLOB bytes holding a copy of old's first `keep` BLOB bytes.
 * `reuse`: old is owned solely by the caller and may be grown in place / released. */
static PackBuf *packbuf_grow(PackBuf *old, size_t keep, size_t need, int reuse) {
	size_t cap = old ? old->cap : 0;
	if (cap < PACK_MIN_CAP) {
		cap = PACK_MIN_CAP;
	}
	while (cap < need) {
		if (cap > (SIZE_MAX - sizeof(PackBuf) - PACK_MMAP_MIN) / 2) {
			if (need > SIZE_MAX - sizeof(PackBuf) - PACK_MMAP_MIN) {
				return NULL;
			}
			cap = need;
			break;
		}
		cap *= 2;
	}
	const size_t size = packbuf_round(sizeof(PackBuf) + cap);
	PackBuf *b = NULL;
#if PACK_HAVE_MMAP
	if (size >= PACK_MMAP_MIN) {
		if (PACK_HAVE_MREMAP && reuse && old && old->mapped) {
			b = packbuf_map(old, size); /* mremap: keeps the contents, no copy */
			if (!b) {
				return NULL;
			}
			reuse = 0;
			old = NULL;
		} else {
			b = packbuf_map(NULL, size);
			if (!b) {
				return NULL;
			}
		}
		b->mapped = 1;
	} else
#endif
	{
		if (reuse && old && !old->mapped) {
			b = (PackBuf *)realloc(old, size);
			if (!b) {
				return NULL;
			}
			reuse = 0;
			old = NULL;
		} else {
			b = (PackBuf *)malloc(size);
			if (!b) {
				return NULL;
			}
		}
		b->mapped = 0;
	}
	b->size = size;
	b->cap = size - sizeof(PackBuf);
	if (old) { /* a new block: copy the caller's view, drop the caller's reference */
		memcpy(PACKBUF_DATA(b), PACKBUF_DATA(old), keep);
		if (reuse) {
			packbuf_free(old);
		} else {
			packbuf_release(old);
		}
	}
	b->refs = 1;
	return b;
}

static idx_t pack_state_size(duckdb_function_info info) {
	(void)info;
	return (idx_t)sizeof(PackState);
}

static void pack_state_init(duckdb_function_info info, duckdb_aggregate_state state) {
	(void)info;
	PackState *st = (PackState *)state;
	st->buf = NULL;
	st->len = 0;
	st->count = 0;
	st->dim = -1;
	st->reg_key = st;
	live_add(st);
}

static void pack_state_destroy(duckdb_aggregate_state *states, idx_t count) {
	for (idx_t i = 0; i < count; i++) {
		PackState *st = (PackState *)states[i];
		if (!st) {
			continue;
		}
		packbuf_release(st->buf);
		st->buf = NULL;
		st->len = 0;
		st->count = 0;
		st->dim = -1;
		if (st->reg_key) {
			live_remove(st->reg_key);
			st->reg_key = NULL;
		}
	}
}

static void pack_error(duckdb_function_info info, const char *what) {
	char msg[160];
	snprintf(msg, sizeof(msg), "similarity_join: %s", what);
	duckdb_aggregate_function_set_error(info, msg);
}

static void pack_dim_error(duckdb_function_info info, int64_t a, int64_t b) {
	char msg[160];
	snprintf(msg, sizeof(msg), "similarity_join: dimension mismatch (%lld vs %lld)", (long long)a, (long long)b);
	duckdb_aggregate_function_set_error(info, msg);
}

/* Make room for `extra` more bytes of vectors of length `dim` (sets dim with the first vector,
 * checks it afterwards).  Returns where to write, or NULL (error already set). */
static inline uint8_t *pack_reserve(duckdb_function_info info, PackState *st, int64_t dim, size_t extra) {
	if (st->dim < 0) {
		if ((uint64_t)dim > UINT32_MAX) {
			pack_error(info, "vector dimension too large");
			return NULL;
		}
		st->dim = dim;
	} else if (st->dim != dim) {
		pack_dim_error(info, st->dim, dim);
		return NULL;
	}
	if (!st->buf) {
		PackBuf *b = packbuf_grow(NULL, 0, PACK_HEADER + extra, 0);
		if (!b) {
			pack_error(info, "out of memory");
			return NULL;
		}
		const uint32_t header[2] = {(uint32_t)dim, 0u};
		memcpy(PACKBUF_DATA(b), header, sizeof(header));
		st->buf = b;
		st->len = PACK_HEADER;
		return PACKBUF_DATA(b) + PACK_HEADER;
	}
	const size_t need = st->len + extra;
	if (need < st->len) {
		pack_error(info, "out of memory");
		return NULL;
	}
	const int sole = __atomic_load_n(&st->buf->refs, __ATOMIC_ACQUIRE) == 1;
	if (!sole || need > st->buf->cap) {
		PackBuf *b = packbuf_grow(st->buf, st->len, need, sole);
		if (!b) {
			pack_error(info, "out of memory");
			return NULL;
		}
		st->buf = b;
	}
	return PACKBUF_DATA(st->buf) + st->len;
}

static inline void pack_convert_f32(float *restrict out, const float *restrict x, size_t n) {
	memcpy(out, x, n * sizeof(float));
}

static inline void pack_convert_f64(float *restrict out, const double *restrict x, size_t n) {
	for (size_t j = 0; j < n; j++) {
		out[j] = (float)x[j];
	}
}

/* Append `rows` vectors of length `dim` stored contiguously from data[off]. 0 on error. */
#define DEFINE_PACK_ROWS(NAME, T, CONVERT)                                                                             \
	static inline int NAME(duckdb_function_info info, PackState *st, const T *data, const uint64_t *child_validity,    \
	                       idx_t off, int64_t dim, idx_t rows) {                                                       \
		const idx_t n = (idx_t)dim * rows;                                                                             \
		if (!range_all_valid(child_validity, off, n)) {                                                                \
			pack_error(info, "vectors contain NULL elements");                                                         \
			return 0;                                                                                                  \
		}                                                                                                              \
		uint8_t *out = pack_reserve(info, st, dim, (size_t)n * sizeof(float));                                         \
		if (!out) {                                                                                                    \
			return 0;                                                                                                  \
		}                                                                                                              \
		CONVERT((float *)(void *)out, data + off, (size_t)n);                                                          \
		st->len += (size_t)n * sizeof(float);                                                                          \
		st->count += (int64_t)rows;                                                                                    \
		return 1;                                                                                                      \
	}

DEFINE_PACK_ROWS(pack_rows_f32, float, pack_convert_f32)
DEFINE_PACK_ROWS(pack_rows_f64, double, pack_convert_f64)

static void pack_state_error(duckdb_function_info info) {
	pack_error(info, "unexpected aggregate state vector (unsupported query shape for __ea_vec_pack)");
}

/* LIST input: one append per row (child offsets need not be contiguous). */
#define DEFINE_PACK_UPDATE_LIST(NAME, T, ROWS)                                                                         \
	static void NAME(duckdb_function_info info, duckdb_data_chunk input, duckdb_aggregate_state *states) {             \
		idx_t n = duckdb_data_chunk_get_size(input);                                                                   \
		duckdb_vector vec = duckdb_data_chunk_get_vector(input, 0);                                                    \
		const uint64_t *validity = duckdb_vector_get_validity(vec);                                                    \
		const duckdb_list_entry *entries = (const duckdb_list_entry *)duckdb_vector_get_data(vec);                     \
		duckdb_vector child = duckdb_list_vector_get_child(vec);                                                       \
		const T *data = (const T *)duckdb_vector_get_data(child);                                                      \
		const uint64_t *child_validity = duckdb_vector_get_validity(child);                                            \
		const int per_row = states_layout(states, n);                                                                  \
		if (per_row < 0) {                                                                                             \
			pack_state_error(info);                                                                                    \
			return;                                                                                                    \
		}                                                                                                              \
		for (idx_t i = 0; i < n; i++) {                                                                                \
			if (!row_valid(validity, i)) {                                                                             \
				continue;                                                                                              \
			}                                                                                                          \
			PackState *st = (PackState *)(per_row ? states[i] : states[0]);                                            \
			if (!ROWS(info, st, data, child_validity, (idx_t)entries[i].offset, (int64_t)entries[i].length, 1)) {      \
				return;                                                                                                \
			}                                                                                                          \
		}                                                                                                              \
	}

/* ARRAY input: each run of consecutive valid rows of one state is appended with one copy. */
#define DEFINE_PACK_UPDATE_ARRAY(NAME, T, ROWS)                                                                        \
	static void NAME(duckdb_function_info info, duckdb_data_chunk input, duckdb_aggregate_state *states) {             \
		idx_t n = duckdb_data_chunk_get_size(input);                                                                   \
		duckdb_vector vec = duckdb_data_chunk_get_vector(input, 0);                                                    \
		duckdb_logical_type type = duckdb_vector_get_column_type(vec);                                                 \
		idx_t dim = duckdb_array_type_array_size(type);                                                                \
		duckdb_destroy_logical_type(&type);                                                                            \
		const uint64_t *validity = duckdb_vector_get_validity(vec);                                                    \
		duckdb_vector child = duckdb_array_vector_get_child(vec);                                                      \
		const T *data = (const T *)duckdb_vector_get_data(child);                                                      \
		const uint64_t *child_validity = duckdb_vector_get_validity(child);                                            \
		const int per_row = states_layout(states, n);                                                                  \
		if (per_row < 0) {                                                                                             \
			pack_state_error(info);                                                                                    \
			return;                                                                                                    \
		}                                                                                                              \
		idx_t i = 0;                                                                                                   \
		while (i < n) {                                                                                                \
			if (!row_valid(validity, i)) {                                                                             \
				i++;                                                                                                   \
				continue;                                                                                              \
			}                                                                                                          \
			duckdb_aggregate_state s0 = per_row ? states[i] : states[0];                                               \
			idx_t j = i + 1;                                                                                           \
			while (j < n && row_valid(validity, j) && (!per_row || states[j] == s0)) {                                 \
				j++;                                                                                                   \
			}                                                                                                          \
			if (!ROWS(info, (PackState *)s0, data, child_validity, i * dim, (int64_t)dim, j - i)) {                    \
				return;                                                                                                \
			}                                                                                                          \
			i = j;                                                                                                     \
		}                                                                                                              \
	}

DEFINE_PACK_UPDATE_LIST(pack_update_list_f32, float, pack_rows_f32)
DEFINE_PACK_UPDATE_LIST(pack_update_list_f64, double, pack_rows_f64)
DEFINE_PACK_UPDATE_ARRAY(pack_update_array_f32, float, pack_rows_f32)
DEFINE_PACK_UPDATE_ARRAY(pack_update_array_f64, double, pack_rows_f64)

/* target := target's rows followed by source's rows (the source keeps its contents) */
static void pack_combine(duckdb_function_info info, duckdb_aggregate_state *source, duckdb_aggregate_state *target,
                         idx_t count) {
	for (idx_t i = 0; i < count; i++) {
		const PackState *src = (const PackState *)source[i];
		PackState *tgt = (PackState *)target[i];
		if (src == tgt || src->count == 0 || !src->buf) {
			continue;
		}
		if (!tgt->buf) { /* empty target: share the source's buffer */
			__atomic_add_fetch(&src->buf->refs, 1u, __ATOMIC_RELAXED);
			tgt->buf = src->buf;
			tgt->len = src->len;
			tgt->count = src->count;
			tgt->dim = src->dim;
			continue;
		}
		const size_t payload = src->len - PACK_HEADER;
		uint8_t *out = pack_reserve(info, tgt, src->dim, payload);
		if (!out) {
			return;
		}
		if (payload) {
			memcpy(out, PACKBUF_DATA(src->buf) + PACK_HEADER, payload);
		}
		tgt->len += payload;
		tgt->count += src->count;
	}
}

static void pack_finalize(duckdb_function_info info, duckdb_aggregate_state *source, duckdb_vector result,
                          idx_t count, idx_t offset) {
	for (idx_t i = 0; i < count; i++) {
		const PackState *st = (const PackState *)source[i];
		const idx_t row = offset + i;
		if (st->count == 0 || !st->buf) {
			duckdb_vector_ensure_validity_writable(result);
			duckdb_validity_set_row_invalid(duckdb_vector_get_validity(result), row);
			continue;
		}
		if (st->len > (size_t)UINT32_MAX) { /* DuckDB strings / BLOBs are at most 4 GiB */
			pack_error(info, "packed vectors exceed the 4 GiB BLOB limit");
			return;
		}
		duckdb_vector_assign_string_element_len(result, row, (const char *)PACKBUF_DATA(st->buf), (idx_t)st->len);
	}
}

static int register_pack(duckdb_connection connection, const char *name) {
	duckdb_logical_type t_f32 = duckdb_create_logical_type(DUCKDB_TYPE_FLOAT);
	duckdb_logical_type t_f64 = duckdb_create_logical_type(DUCKDB_TYPE_DOUBLE);
	duckdb_logical_type list_f32 = duckdb_create_list_type(t_f32);
	duckdb_logical_type list_f64 = duckdb_create_list_type(t_f64);
	duckdb_logical_type arr_f32 = duckdb_create_array_type(t_f32, 0);
	duckdb_logical_type arr_f64 = duckdb_create_array_type(t_f64, 0);
	duckdb_logical_type ret = duckdb_create_logical_type(DUCKDB_TYPE_BLOB);

	duckdb_logical_type args[4] = {list_f32, list_f64, arr_f32, arr_f64};
	duckdb_aggregate_update_t updates[4] = {pack_update_list_f32, pack_update_list_f64, pack_update_array_f32,
	                                        pack_update_array_f64};
	int ok = list_f32 && list_f64 && arr_f32 && arr_f64 && ret;
	duckdb_aggregate_function_set set = ok ? duckdb_create_aggregate_function_set(name) : NULL;
	ok = ok && set;
	for (int k = 0; k < 4 && ok; k++) {
		duckdb_aggregate_function f = duckdb_create_aggregate_function();
		if (!f) {
			ok = 0;
			break;
		}
		duckdb_aggregate_function_set_name(f, name);
		duckdb_aggregate_function_add_parameter(f, args[k]);
		duckdb_aggregate_function_set_return_type(f, ret);
		duckdb_aggregate_function_set_functions(f, pack_state_size, pack_state_init, updates[k], pack_combine,
		                                        pack_finalize);
		duckdb_aggregate_function_set_destructor(f, pack_state_destroy);
		ok = duckdb_add_aggregate_function_to_set(set, f) == DuckDBSuccess;
		duckdb_destroy_aggregate_function(&f);
	}
	ok = ok && duckdb_register_aggregate_function_set(connection, set) == DuckDBSuccess;

	if (set) {
		duckdb_destroy_aggregate_function_set(&set);
	}
	duckdb_destroy_logical_type(&ret);
	duckdb_destroy_logical_type(&arr_f64);
	duckdb_destroy_logical_type(&arr_f32);
	duckdb_destroy_logical_type(&list_f64);
	duckdb_destroy_logical_type(&list_f32);
	duckdb_destroy_logical_type(&t_f64);
	duckdb_destroy_logical_type(&t_f32);
	return ok;
}

/* ------------------------------------------------------------------------------------ */
/* registration                                                                         */
/* ------------------------------------------------------------------------------------ */

static int add_overload(duckdb_aggregate_function_set set, const char *name, duckdb_logical_type arg,
                        duckdb_logical_type ret, duckdb_aggregate_update_t update, duckdb_aggregate_combine_t combine,
                        duckdb_aggregate_finalize_t finalize) {
	duckdb_aggregate_function f = duckdb_create_aggregate_function();
	if (!f) {
		return 0;
	}
	duckdb_aggregate_function_set_name(f, name);
	duckdb_aggregate_function_add_parameter(f, arg);
	duckdb_aggregate_function_set_return_type(f, ret);
	duckdb_aggregate_function_set_functions(f, vec_state_size, vec_state_init, update, combine, finalize);
	duckdb_aggregate_function_set_destructor(f, vec_state_destroy);
	int ok = duckdb_add_aggregate_function_to_set(set, f) == DuckDBSuccess;
	duckdb_destroy_aggregate_function(&f);
	return ok;
}

static int register_kind(duckdb_connection connection, const char *name, int kind) {
	duckdb_logical_type t_f32 = duckdb_create_logical_type(DUCKDB_TYPE_FLOAT);
	duckdb_logical_type t_f64 = duckdb_create_logical_type(DUCKDB_TYPE_DOUBLE);
	duckdb_logical_type list_f32 = duckdb_create_list_type(t_f32);
	duckdb_logical_type list_f64 = duckdb_create_list_type(t_f64);
	/* array size 0 = "ARRAY of any size" (binds FLOAT[N] for every N without a cast) */
	duckdb_logical_type arr_f32 = duckdb_create_array_type(t_f32, 0);
	duckdb_logical_type arr_f64 = duckdb_create_array_type(t_f64, 0);
	duckdb_logical_type ret = duckdb_create_list_type(t_f64);

	duckdb_aggregate_combine_t combine = kind == KIND_MEAN ? mean_combine : sum_combine;
	duckdb_aggregate_finalize_t finalize = kind == KIND_MEAN ? mean_finalize : sum_finalize;

	int ok = list_f32 && list_f64 && arr_f32 && arr_f64 && ret;
	duckdb_aggregate_function_set set = ok ? duckdb_create_aggregate_function_set(name) : NULL;
	ok = ok && set;
	ok = ok && add_overload(set, name, list_f32, ret, kind == KIND_MEAN ? mean_update_list_f32 : sum_update_list_f32,
	                        combine, finalize);
	ok = ok && add_overload(set, name, list_f64, ret, kind == KIND_MEAN ? mean_update_list_f64 : sum_update_list_f64,
	                        combine, finalize);
	ok = ok && add_overload(set, name, arr_f32, ret, kind == KIND_MEAN ? mean_update_array_f32 : sum_update_array_f32,
	                        combine, finalize);
	ok = ok && add_overload(set, name, arr_f64, ret, kind == KIND_MEAN ? mean_update_array_f64 : sum_update_array_f64,
	                        combine, finalize);
	ok = ok && duckdb_register_aggregate_function_set(connection, set) == DuckDBSuccess;

	if (set) {
		duckdb_destroy_aggregate_function_set(&set);
	}
	duckdb_destroy_logical_type(&ret);
	duckdb_destroy_logical_type(&arr_f64);
	duckdb_destroy_logical_type(&arr_f32);
	duckdb_destroy_logical_type(&list_f64);
	duckdb_destroy_logical_type(&list_f32);
	duckdb_destroy_logical_type(&t_f64);
	duckdb_destroy_logical_type(&t_f32);
	return ok;
}

DUCKDB_EXTENSION_ENTRYPOINT(duckdb_connection connection, duckdb_extension_info info,
                            struct duckdb_extension_access *access) {
	if (!register_kind(connection, "__ea_vec_sum", KIND_SUM)) {
		access->set_error(info, "ea_vec: failed to register __ea_vec_sum");
		return false;
	}
	if (!register_kind(connection, "__ea_vec_mean", KIND_MEAN)) {
		access->set_error(info, "ea_vec: failed to register __ea_vec_mean");
		return false;
	}
	if (!register_pack(connection, "__ea_vec_pack")) {
		access->set_error(info, "ea_vec: failed to register __ea_vec_pack");
		return false;
	}
	return true;
}
