/* The t1d codec's dictionary, coder, checker and reference kernel (moeq_tdict.h; QMoE,
 * research/algorithms.md §5). The dictionary is a Tunstall parse tree over pairs of trits under
 * an iid model P(0) = k/256, P(+) = P(−) = (1 − k/256)/2: starting from the 9 pairs, the most
 * probable leaf is expanded into its 9 children until one more expansion would pass 2^16 leaves
 * (65529: a complete 9-ary tree has 9 + 8m). A leaf at 14 pairs is never expanded. Sequence
 * probabilities are products of doubles in a fixed order (IEEE, no contraction: exactly the
 * same on every machine); ties go to the leaf created first. Codewords number the leaves in
 * lexicographic (depth-first, symbol 0 first) order. The tree is complete and prefix-free, so
 * greedy longest match is a walk from the root to a leaf and always succeeds. */
#include "moeq_tdict.h"
#include "moeq_kernels.h"
#include "moeq_core.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NSYM 9
#define LEAVES_MAX 65536

static inline int heap_before(const double *p, int32_t a, int32_t b)
{
    return p[a] > p[b] || (p[a] == p[b] && a < b);
}

static void heap_push(int32_t *h, int32_t *n, const double *p, int32_t x)
{
    int32_t i = (*n)++;
    while (i > 0) {
        int32_t up = (i - 1) / 2;
        if (!heap_before(p, x, h[up])) break;
        h[i] = h[up];
        i = up;
    }
    h[i] = x;
}

static int32_t heap_pop(int32_t *h, int32_t *n, const double *p)
{
    int32_t top = h[0], x = h[--(*n)], i = 0;
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_before(p, h[c + 1], h[c])) c++;
        if (!heap_before(p, h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = x;
    return top;
}

moeq_status moeq_tdict_build(int k, moeq_tdict **out, moeq_error *err)
{
    *out = NULL;
    if (k < 1 || k > 255) return moeq_fail(err, MOEQ_ERR_MISUSE, "t1d: p0 byte %d is not 1..255", k);
    /* expansions: the root, then (65529 - 9) / 8 = 8190 more */
    const int32_t maxnodes = 1 + NSYM * (1 + (MOEQ_TDICT_CODES - NSYM) / 8);
    moeq_tdict *d = calloc(1, sizeof *d);
    double *prob = malloc((size_t)maxnodes * sizeof *prob);
    int32_t *parent = malloc((size_t)maxnodes * sizeof *parent), *heap = malloc((size_t)maxnodes * sizeof *heap);
    uint8_t *depth = malloc((size_t)maxnodes);
    if (d) {
        d->child = malloc((size_t)maxnodes * sizeof *d->child);
        d->id = malloc((size_t)maxnodes * sizeof *d->id);
    }
    if (!d || !prob || !parent || !heap || !depth || !d->child || !d->id) {
        free(prob); free(parent); free(heap); free(depth);
        moeq_tdict_free(d);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "t1d: out of memory for the dictionary");
    }
    d->k = k;
    /* exact dyadic probabilities: P(0) = k/256, P(±) = (256 - k)/512; a pair is 3a + b */
    const double t0 = k / 256.0, t1 = (256 - k) / 512.0, tp[3] = { t0, t1, t1 };
    double pp[NSYM];
    for (int s = 0; s < NSYM; s++) pp[s] = tp[s / 3] * tp[s % 3];
    int32_t nn = 1, nh = 0;
    prob[0] = 1;
    depth[0] = 0;
    parent[0] = -1;
    d->child[0] = -1;
    int32_t leaves = 1;
    int32_t x = 0;   /* the node to expand: the root first */
    for (;;) {
        d->child[x] = nn;
        for (int s = 0; s < NSYM; s++) {
            int32_t c = nn++;
            prob[c] = prob[x] * pp[s];
            depth[c] = (uint8_t)(depth[x] + 1);
            parent[c] = x;
            d->child[c] = -1;
            heap_push(heap, &nh, prob, c);
        }
        leaves += NSYM - 1;
        if (leaves + NSYM - 1 > LEAVES_MAX) break;
        do x = heap_pop(heap, &nh, prob);   /* a 14-pair leaf stays a leaf */
        while (depth[x] >= MOEQ_TDICT_MAXPAIRS && nh > 0);
        if (depth[x] >= MOEQ_TDICT_MAXPAIRS) break;   /* not reached: the heap holds 8k+ leaves */
    }
    d->nnodes = nn;
    d->n = (uint32_t)leaves;
    /* codewords in depth-first order, symbol 0 first; heap reused as the stack */
    uint32_t next = 0;
    int32_t sp = 0;
    heap[sp++] = 0;
    while (sp > 0) {
        int32_t v = heap[--sp];
        if (d->child[v] < 0) {
            d->id[v] = (int32_t)next;
            uint64_t e = depth[v];
            for (int32_t u = v, i = depth[v] - 1; u > 0; u = parent[u], i--) {
                int s = (u - 1) % NSYM;   /* pair i: trits s / 3, s % 3 */
                e |= (uint64_t)(s / 3 | (s % 3) << 2) << (4 + 4 * i);
            }
            d->lut[next++] = e;
        } else {
            d->id[v] = -1;
            for (int s = NSYM - 1; s >= 0; s--) heap[sp++] = d->child[v] + s;
        }
    }
    free(prob); free(parent); free(heap); free(depth);
    *out = d;
    return MOEQ_OK;
}

void moeq_tdict_free(moeq_tdict *d)
{
    if (!d) return;
    free(d->child);
    free(d->id);
    free(d);
}

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static moeq_tdict *cache[256];   /* the decoders, kept for the process (reachable: no leak) */

static moeq_tdict *enc_cache[256];   /* the encoders (with their trees): k values quantize tried */

/* dictionary k from slot, built once under the lock; decoders drop the parse tree (the LUT is
 * all decoding needs) */
static const moeq_tdict *cached(moeq_tdict **slot, int k, int keep_tree)
{
    if (k < 1 || k > 255) return NULL;
    moeq_tdict *d = __atomic_load_n(&slot[k], __ATOMIC_ACQUIRE);
    if (d) return d;
    pthread_mutex_lock(&cache_lock);
    d = slot[k];
    if (!d) {
        moeq_error e;
        if (moeq_tdict_build(k, &d, &e) == MOEQ_OK) {
            if (!keep_tree) {
                free(d->child);
                free(d->id);
                d->child = d->id = NULL;
            }
            __atomic_store_n(&slot[k], d, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return d;
}

const moeq_tdict *moeq_tdict_get(int k) { return cached(cache, k, 0); }
const moeq_tdict *moeq_tdict_get_encoder(int k) { return cached(enc_cache, k, 1); }

int64_t moeq_tdict_encode_row(const moeq_tdict *d, const uint8_t *t, int64_t cols, uint16_t *out, int64_t cap)
{
    int64_t n = 0;
    int32_t v = 0;
    for (int64_t c = 0; c < cols; c += 2) {
        int s = 3 * t[c] + (c + 1 < cols ? t[c + 1] : 0);
        v = d->child[v] + s;
        if (d->child[v] < 0) {
            if (out) {
                if (n >= cap) return -1;
                out[n] = (uint16_t)d->id[v];
            }
            n++;
            v = 0;
        }
    }
    while (v != 0) {   /* the tail: zero pairs until the codeword ends (the tree is complete) */
        v = d->child[v];
        if (d->child[v] < 0) {
            if (out) {
                if (n >= cap) return -1;
                out[n] = (uint16_t)d->id[v];
            }
            n++;
            v = 0;
        }
    }
    return n;
}

/* Decodes codewords (little-endian u16 at cw, any alignment: the checker reads buffers as given)
 * into t (NULL: checks only); 0 when they make exactly cols trits with zero padding, else -1 -
 * the index of the first codeword at fault. */
static int64_t decode_row(const moeq_tdict *d, const unsigned char *cw, int64_t ncw, int64_t cols, uint8_t *t)
{
    int64_t pos = 0;
    for (int64_t i = 0; i < ncw; i++) {
        const uint16_t c = (uint16_t)(cw[2 * i] | cw[2 * i + 1] << 8);
        if (c >= d->n || pos >= cols) return -1 - i;
        uint64_t e = d->lut[c];
        int len = (int)(e & 15);
        for (int j = 0; j < len; j++, pos += 2) {
            int a = (int)(e >> (4 + 4 * j)) & 3, b = (int)(e >> (6 + 4 * j)) & 3;
            if (pos < cols) { if (t) t[pos] = (uint8_t)a; } else if (a) return -1 - i;
            if (pos + 1 < cols) { if (t) t[pos + 1] = (uint8_t)b; } else if (b) return -1 - i;
        }
    }
    return pos >= cols ? 0 : -1 - ncw;
}

int moeq_tdict_decode_row(const moeq_tdict *d, const uint16_t *cw, int64_t ncw, int64_t cols, uint8_t *t)
{
    return decode_row(d, (const unsigned char *)cw, ncw, cols, t) == 0 ? 0 : -1;
}

uint64_t moeq_tdict_raw_size(int64_t rows, int64_t count)
{
    if (rows <= 0 || count < 0 || rows > ((int64_t)1 << 40) || count > (int64_t)UINT32_MAX) return 0;
    return MOEQ_TDICT_HDR + 4 * (uint64_t)rows + 4 * ((uint64_t)rows + 1) + 2 * (uint64_t)count;
}

uint64_t moeq_tdict_raw_bound(int64_t rows, int64_t cols)
{
    if (rows <= 0 || cols <= 0 || rows > ((int64_t)1 << 40) || cols > ((int64_t)1 << 40)) return 0;
    uint64_t pairs = ((uint64_t)cols + 1) / 2;
    if (pairs > UINT32_MAX / (uint64_t)rows) return 0;   /* codewords must fit the u32 offsets */
    return moeq_tdict_raw_size(rows, (int64_t)(pairs * (uint64_t)rows));
}

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

moeq_status moeq_tdict_check(const void *raw, uint64_t size, int64_t rows, int64_t cols, moeq_error *err)
{
    const unsigned char *b = raw;
    if (size < MOEQ_TDICT_HDR)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "t1d: %llu bytes, shorter than the %d-byte header (offset 0)",
                         (unsigned long long)size, MOEQ_TDICT_HDR);
    int k = b[0];
    if (k < 1)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "t1d: p0 byte 0 at offset 0 (want 1..255)");
    for (int i = 1; i < 8; i++)
        if (b[i]) return moeq_fail(err, MOEQ_ERR_FORMAT, "t1d: reserved header byte at offset %d is not zero", i);
    uint64_t hr = rd64(b + 8), hc = rd64(b + 16), count = rd64(b + 24);
    if (hr != (uint64_t)rows || hc != (uint64_t)cols)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "t1d: header rows %llu cols %llu (offsets 8, 16), the shape is "
                         "[%lld, %lld]", (unsigned long long)hr, (unsigned long long)hc, (long long)rows,
                         (long long)cols);
    uint64_t want = count <= UINT32_MAX ? moeq_tdict_raw_size(rows, (int64_t)count) : 0;
    if (!want || want != size)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "t1d: codeword count %llu (offset 24) implies %llu bytes, the "
                         "tensor has %llu", (unsigned long long)count, (unsigned long long)want,
                         (unsigned long long)size);
    const uint64_t lo_off = MOEQ_TDICT_HDR, off_off = lo_off + 4 * (uint64_t)rows,
                   cw_off = off_off + 4 * ((uint64_t)rows + 1);
    for (int64_t r = 0; r < rows; r++) {
        uint64_t o = lo_off + 4 * (uint64_t)r;
        float lo = moeq_f16_to_f32(rd16(b + o)), hi = moeq_f16_to_f32(rd16(b + o + 2));
        if (!isfinite(lo) || !isfinite(hi) || !(lo <= 0) || !(hi >= 0))
            return moeq_fail(err, MOEQ_ERR_FORMAT, "t1d: row %lld levels lo %g hi %g at offset %llu: want finite "
                             "lo <= 0 <= hi", (long long)r, (double)lo, (double)hi, (unsigned long long)o);
    }
    if (rd32(b + off_off) != 0)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "t1d: first row offset at %llu is %u, not 0",
                         (unsigned long long)off_off, rd32(b + off_off));
    if (rd32(b + off_off + 4 * (uint64_t)rows) != count)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "t1d: last row offset at %llu is %u, not the count %llu",
                         (unsigned long long)(off_off + 4 * (uint64_t)rows), rd32(b + off_off + 4 * (uint64_t)rows),
                         (unsigned long long)count);
    for (int64_t r = 0; r < rows; r++) {
        uint32_t a = rd32(b + off_off + 4 * (uint64_t)r), z = rd32(b + off_off + 4 * (uint64_t)r + 4);
        if (z < a || z > count)
            return moeq_fail(err, MOEQ_ERR_FORMAT, "t1d: row offsets not monotone at offset %llu (%u then %u)",
                             (unsigned long long)(off_off + 4 * (uint64_t)r + 4), a, z);
    }
    const moeq_tdict *d = moeq_tdict_get(k);
    if (!d) return moeq_fail(err, MOEQ_ERR_NOMEM, "t1d: out of memory for the dictionary of p0 byte %d", k);
    for (int64_t r = 0; r < rows; r++) {
        uint32_t a = rd32(b + off_off + 4 * (uint64_t)r), z = rd32(b + off_off + 4 * (uint64_t)r + 4);
        int64_t bad = decode_row(d, b + cw_off + 2 * (uint64_t)a, z - a, cols, NULL);
        if (bad) {
            int64_t i = -1 - bad;
            if (i >= (int64_t)(z - a))
                return moeq_fail(err, MOEQ_ERR_FORMAT, "t1d: row %lld's %u codewords (offset %llu) decode to fewer "
                                 "than %lld weights", (long long)r, z - a,
                                 (unsigned long long)(cw_off + 2 * (uint64_t)a), (long long)cols);
            uint16_t c = rd16(b + cw_off + 2 * ((uint64_t)a + (uint64_t)i));
            return moeq_fail(err, MOEQ_ERR_FORMAT, "t1d: row %lld codeword %u at offset %llu %s", (long long)r, c,
                             (unsigned long long)(cw_off + 2 * ((uint64_t)a + (uint64_t)i)),
                             c >= d->n ? "is not in the dictionary (65529 codewords)"
                                       : "runs past the row's end (an extra codeword, or padding not zero)");
        }
    }
    return MOEQ_OK;
}

void moeq_tdict_view_of(const void *raw, moeq_tdict_view *v)
{
    const unsigned char *b = raw;
    v->k = b[0];
    v->rows = (int64_t)rd64(b + 8);
    v->cols = (int64_t)rd64(b + 16);
    v->count = (int64_t)rd64(b + 24);
    v->levels = (const uint16_t *)(const void *)(b + MOEQ_TDICT_HDR);
    v->off = (const uint32_t *)(const void *)(b + MOEQ_TDICT_HDR + 4 * v->rows);
    v->cw = (const uint16_t *)(const void *)(b + MOEQ_TDICT_HDR + 8 * v->rows + 4);
}

uint64_t moeq_tdict_size_of(const void *raw)
{
    const unsigned char *b = raw;
    return moeq_tdict_raw_size((int64_t)rd64(b + 8), (int64_t)rd64(b + 24));
}

/* row r of a checked tensor to trits (t: cols + 2·14 bytes: the last codeword may run past) */
static void row_trits(const moeq_tdict *d, const moeq_tdict_view *v, int64_t r, uint8_t *t)
{
    int64_t pos = 0;
    for (uint32_t i = v->off[r]; i < v->off[r + 1]; i++) {
        uint64_t e = d->lut[v->cw[i]];
        int len = (int)(e & 15);
        for (int j = 0; j < 2 * len; j++, pos++) t[pos] = (uint8_t)((e >> (4 + 2 * j)) & 3);
    }
}

void moeq_tdict_dequant(const void *raw, int64_t r0, int64_t r1, float *dst)
{
    moeq_tdict_view v;
    moeq_tdict_view_of(raw, &v);
    const moeq_tdict *d = moeq_tdict_get(v.k);
    uint8_t *t = malloc((size_t)v.cols + 4 * MOEQ_TDICT_MAXPAIRS);
    if (!d || !t || r0 < 0 || r1 > v.rows) {   /* a checked tensor; memory only */
        free(t);
        if (r1 > r0) memset(dst, 0, (size_t)(r1 - r0) * (size_t)v.cols * sizeof *dst);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const float lv[3] = { 0.0f, moeq_f16_to_f32(v.levels[2 * r + 1]), moeq_f16_to_f32(v.levels[2 * r]) };
        row_trits(d, &v, r, t);
        float *o = dst + (size_t)(r - r0) * (size_t)v.cols;
        for (int64_t c = 0; c < v.cols; c++) o[c] = lv[t[c]];
    }
    free(t);
}

void moeq_tdict_gemm_ref(const void *raw, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                         int64_t ldy)
{
    moeq_tdict_view v;
    moeq_tdict_view_of(raw, &v);
    const moeq_tdict *d = moeq_tdict_get(v.k);
    uint8_t *t = malloc((size_t)v.cols + 4 * MOEQ_TDICT_MAXPAIRS);
    if (!d || !t) {
        free(t);
        for (int64_t i = 0; i < n; i++)
            for (int64_t r = r0; r < r1; r++) Y[i * ldy + (r - r0)] = NAN;   /* out of memory: visible */
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const float lo = moeq_f16_to_f32(v.levels[2 * r]), hi = moeq_f16_to_f32(v.levels[2 * r + 1]);
        row_trits(d, &v, r, t);
        for (int64_t i = 0; i < n; i++) {
            const float *x = X + i * ldx;
            float sp = 0, sm = 0;
            for (int64_t c = 0; c < v.cols; c++) {
                if (t[c] == 1) sp += x[c];
                else if (t[c] == 2) sm += x[c];
            }
            Y[i * ldy + (r - r0)] = hi * sp + lo * sm;
        }
    }
    free(t);
}

void moeq_tdict_gemm(const void *raw, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                     int64_t ldy)
{
#if defined(__x86_64__)
    /* every x86 set but ref has AVX2 + FMA (dispatch.c checks cpuid before choosing one) */
    if (strcmp(moeq_kernels()->name, "ref")) {
        moeq_tdict_gemm_avx2(raw, X, n, ldx, r0, r1, Y, ldy);
        return;
    }
#endif
    moeq_tdict_gemm_ref(raw, X, n, ldx, r0, r1, Y, ldy);
}

void moeq_tdict_gemm_par(const void *raw, const float *X, int64_t n, int64_t ldx, float *Y, int64_t ldy)
{
    moeq_tdict_view v;
    moeq_tdict_view_of(raw, &v);
    const int64_t nb = (v.rows + 63) / 64;   /* fixed row blocks: a row's bits do not depend on the split */
#pragma omp parallel for schedule(dynamic, 1) if (nb > 1)
    for (int64_t b = 0; b < nb; b++) {
        int64_t r0 = b * 64, r1 = r0 + 64 < v.rows ? r0 + 64 : v.rows;
        moeq_tdict_gemm(raw, X, n, ldx, r0, r1, Y + r0, ldy);
    }
}

double moeq_tdict_rate(int k)
{
    const moeq_tdict *d = moeq_tdict_get(k);
    if (!d) return 0;
    const double t0 = k / 256.0, t1 = (256 - k) / 512.0, tp[3] = { t0, t1, t1 };
    double el = 0;   /* in codeword order: the same sum on every machine */
    for (uint32_t c = 0; c < d->n; c++) {
        uint64_t e = d->lut[c];
        int len = (int)(e & 15);
        double p = 1;
        for (int j = 0; j < 2 * len; j++) p *= tp[(e >> (4 + 2 * j)) & 3];
        el += p * len;
    }
    return 16.0 / (2.0 * el);
}

double moeq_tdict_entropy(int k)
{
    if (k < 1 || k > 255) return 0;
    double p0 = k / 256.0, q = (1 - p0) / 2;
    return -p0 * log2(p0) - 2 * q * log2(q);
}
