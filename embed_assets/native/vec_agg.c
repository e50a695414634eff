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
 * Accumulation is in double.  State = pointer to a heap array of doubles, count, dim and
 * a (lazily allocated) per-position NULL mask; the destructor frees both arrays.
 *
 * Build: see build.py (gcc -O3 -march=x86-64-v2 -shared -fPIC, then the metadata footer).
 * duckdb.h / duckdb_extension.h are vendored unmodified from duckdb tag v1.5.5 (src/include/);
 * the extension targets the stable C extension API v1.2.0 (the header's default), so the
 * footer's version field is "v1.2.0" (DuckDB accepts it when its own C API is >= v1.2.0; only
 * tested with 1.5.5) for the platform written in the footer.
 */
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
	return true;
}
