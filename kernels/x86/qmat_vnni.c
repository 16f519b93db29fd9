/* AVX-512 VNNI gemv of the int codecs with int8 activations (llama.cpp's trick; the formula
 * and its error bound are those of moeq_x8_quantize, include/moeq_kernels.h).
 *
 * x is quantized once per call and its bytes permuted into the lane order that the codes
 * take after one load, a shift and a mask, so a row costs per 64-byte load of codes one
 * integer dot product per code plane (vpdpbusd: u8 codes x s8 activations, 4 products per
 * int32 lane), one conversion to float and one multiply-add by a lane vector of
 * scale(group) x dx(block). A "chunk" is what one 64-byte load decodes to:
 *   8 bits: 64 columns, lanes 8i..8i+7 = block i;          codes used as loaded
 *   4 bits: 128 columns, lanes 4j..4j+3 = block j;         planes: low, high nibbles
 *   2 bits: 256 columns, lanes 2j, 2j+1 = block j;         planes: bits 0-1, 2-3, 4-5, 6-7
 *   3 bits: 256 columns from 96 bytes: the 2-bit planes gathered by one byte permute
 *           (VBMI), bit 2 added from each block's 32-bit word by vpshufbitqmb (BITALG).
 * The zero term sum_g s_g z_g sum_{b in g} dx_b sxq_b is 16 groups per vector per row.
 * The gemm is qmat_gemm_vnni.c; shapes it does not take go to dequantized tiles + sgemm. */
#include "kernels/x86/x86.h"
#include "kernels/x86/qmat_x86.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

/* Bits [lo, lo + n) of every byte moved to bits [0, n), the rest cleared: one GFNI affine
 * transform instead of a 16-bit shift and a mask (output bit i is row byte 7 - i of the
 * matrix dotted with the input byte). */
#define BITS_TO_LOW(v, lo, n) _mm512_gf2p8affine_epi64_epi8((v), _mm512_set1_epi64((long long)bit_matrix(lo, n)), 0)
static inline uint64_t bit_matrix(int lo, int n)
{
    uint64_t m = 0;
    for (int i = 0; i < n; i++) m |= (uint64_t)(1u << (lo + i)) << (8 * (7 - i));
    return m;
}

/* x prepared for one codec geometry: per chunk the permuted int8 activations (cc bytes), the
 * lane vector of block scales dx, and where each lane's group scale is. */
typedef struct xprep {
    int64_t cc, nchunks, ng;   /* columns per chunk, chunks per row (last may be short), groups */
    int bcast;                 /* group % cc == 0: one group per chunk, at c * cc / group */
    int8_t *xq;                /* nchunks * cc */
    float *dxl;                /* nchunks * 16 */
    int32_t *gbase, *gidx;     /* nchunks, nchunks * 16: lane i's group = gbase[c] + gidx[16c + i] */
    float *gsq;                /* ng rounded up to 16: sum_{b in g} dx_b sxq_b, zero padded */
    float *sf;                 /* per row: the group scales in float32, ng + 16, zero padded */
    void *mem;
} xprep;

static int64_t chunk_cols(int bits) { return bits == 8 ? 64 : bits == 4 ? 128 : 256; }

/* x's int8 values of one 32-column block (block j of its chunk) into the chunk's lane order
 * (see the table above): runs of 16 (4 bits) or 8 (2, 3 bits) columns per code plane */
static void place_block(int bits, int64_t j, const int8_t *src, int8_t *chunk)
{
    switch (bits) {
    case 8: memcpy(chunk + 32 * j, src, 32); break;
    case 4:
        memcpy(chunk + 16 * j, src, 16);
        memcpy(chunk + 64 + 16 * j, src + 16, 16);
        break;
    default:
        for (int pl = 0; pl < 4; pl++) memcpy(chunk + 64 * pl + 8 * j, src + 8 * pl, 8);
        break;
    }
}

static int prep_x(const moeq_qmat *w, const float *x, xprep *p)
{
    const int64_t cols = w->cols, nb = cols / 32, ng = moeq_qmat_groups(w);
    p->cc = chunk_cols(w->bits);
    p->nchunks = (cols + p->cc - 1) / p->cc;
    p->ng = ng;
    p->bcast = w->group % p->cc == 0;
    const int64_t bpc = p->cc / 32, lpb = 16 / bpc, ngp = (ng + 15) / 16 * 16;
    size_t need = (size_t)(p->nchunks * p->cc)                               /* xq */
                  + (size_t)cols + (size_t)nb * 8                            /* natural xq, dx, sxq */
                  + (size_t)p->nchunks * 16 * 4 * 2 + (size_t)p->nchunks * 4 /* dxl, gidx, gbase */
                  + (size_t)(ngp + ng + 16) * 4 + 64 * 8;
    p->mem = malloc(need);
    if (!p->mem) return 0;
    char *m = (char *)(((uintptr_t)p->mem + 63) & ~(uintptr_t)63);
#define TAKE(ptr, bytes) do { ptr = (void *)m; m += ((size_t)(bytes) + 63) / 64 * 64; } while (0)
    int8_t *xn;
    float *dx;
    int32_t *sxq;
    TAKE(p->xq, p->nchunks * p->cc);
    TAKE(xn, cols);
    TAKE(dx, nb * 4);
    TAKE(sxq, nb * 4);
    TAKE(p->dxl, p->nchunks * 64);
    TAKE(p->gidx, p->nchunks * 64);
    TAKE(p->gbase, p->nchunks * 4);
    TAKE(p->gsq, ngp * 4);
    TAKE(p->sf, (ng + 16) * 4);
#undef TAKE
    if (!moeq_x8_quantize(x, cols, xn, dx, sxq)) {
        free(p->mem);
        return 0;
    }
    memset(p->xq, 0, (size_t)(p->nchunks * p->cc));
    for (int64_t b = 0; b < nb; b++) place_block(w->bits, b % bpc, xn + 32 * b, p->xq + (b / bpc) * p->cc);
    /* the group of each block by counting blocks, not by a 64-bit division per lane */
    const int64_t bpg = w->group / 32;
    memset(p->gsq, 0, (size_t)ngp * 4);
    for (int64_t c = 0, b = 0, g = 0, in_g = 0; c < p->nchunks; c++) {
        p->gbase[c] = (int32_t)g;
        for (int64_t j = 0; j < bpc; j++, b++) {
            int32_t rel = (int32_t)(g - p->gbase[c]);
            float d = 0.0f;
            if (b < nb) {
                d = dx[b];
                p->gsq[g] += dx[b] * (float)sxq[b];
                if (++in_g == bpg) in_g = 0, g++;
            }
            for (int64_t i = j * lpb; i < (j + 1) * lpb; i++) {
                p->dxl[16 * c + i] = d;
                p->gidx[16 * c + i] = b < nb ? rel : 0;
            }
        }
    }
    memset(p->sf, 0, (size_t)(ng + 16) * 4);
    return 1;
}

/* The four planes of a 3-bit chunk (8 blocks) whose 96 bytes start at byte `off` (0 or 32) of
 * the 128 bytes a:b. Block j: 8 bytes of 2-bit planes at 12j, its bit-2 word at 12j + 8. */
INLINE __m512i planes3_dot(__m512i a, __m512i b, int off, const int8_t *xq)
{
    const __m512i o = _mm512_set1_epi8((char)off);
    const __m512i idx_lo = _mm512_add_epi8(o, _mm512_set_epi64(0x5b5a595857565554, 0x4f4e4d4c4b4a4948, 0x434241403f3e3d3c,
                                                               0x3736353433323130, 0x2b2a292827262524, 0x1f1e1d1c1b1a1918,
                                                               0x131211100f0e0d0c, 0x0706050403020100));
    const __m512i idx_hi = _mm512_add_epi8(o, _mm512_set_epi64(0x000000005f5e5d5c, 0x0000000053525150, 0x0000000047464544,
                                                               0x000000003b3a3938, 0x000000002f2e2d2c, 0x0000000023222120,
                                                               0x0000000017161514, 0x000000000b0a0908));
    __m512i lo = _mm512_permutex2var_epi8(a, idx_lo, b);
    __m512i hi = _mm512_maskz_permutex2var_epi8(0x0f0f0f0f0f0f0f0full, a, idx_hi, b);
    const __m512i m3 = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
    /* plane pl, byte 8j + k: bit 8 pl + k of block j's word (qword j of hi) */
    const __m512i sel0 = _mm512_set1_epi64(0x0706050403020100), sel1 = _mm512_set1_epi64(0x0f0e0d0c0b0a0908);
    const __m512i sel2 = _mm512_set1_epi64(0x1716151413121110), sel3 = _mm512_set1_epi64(0x1f1e1d1c1b1a1918);
    __m512i q0 = _mm512_and_si512(lo, m3), q1 = BITS_TO_LOW(lo, 2, 2);
    __m512i q2 = BITS_TO_LOW(lo, 4, 2), q3 = BITS_TO_LOW(lo, 6, 2);
    q0 = _mm512_mask_add_epi8(q0, _mm512_bitshuffle_epi64_mask(hi, sel0), q0, four);
    q1 = _mm512_mask_add_epi8(q1, _mm512_bitshuffle_epi64_mask(hi, sel1), q1, four);
    q2 = _mm512_mask_add_epi8(q2, _mm512_bitshuffle_epi64_mask(hi, sel2), q2, four);
    q3 = _mm512_mask_add_epi8(q3, _mm512_bitshuffle_epi64_mask(hi, sel3), q3, four);
    __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q0, _mm512_load_si512(xq));
    d = _mm512_dpbusd_epi32(d, q1, _mm512_load_si512(xq + 64));
    d = _mm512_dpbusd_epi32(d, q2, _mm512_load_si512(xq + 128));
    return _mm512_dpbusd_epi32(d, q3, _mm512_load_si512(xq + 192));
}

/* One chunk's integer dot products; bytes = -1 for a whole chunk, else the short last one's. */
INLINE __m512i chunk_dot(int bits, const uint8_t *p, const int8_t *xq, int64_t bytes)
{
    const __m512i z = _mm512_setzero_si512();
    const int full = bytes < 0;   /* a constant at each call site: the main loop has no masks */
    if (bits == 3) {
        if (full)
            return planes3_dot(_mm512_loadu_si512(p), _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 64))), 0, xq);
        return planes3_dot(_mm512_maskz_loadu_epi8(bytes >= 64 ? ~0ull : (1ull << bytes) - 1, p),
                           _mm512_maskz_loadu_epi8(bytes > 64 ? (1ull << (bytes - 64)) - 1 : 0, p + 64), 0, xq);
    }
    __m512i v = full ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8((1ull << bytes) - 1, p);
    if (bits == 8) return _mm512_dpbusd_epi32(z, v, _mm512_load_si512(xq));
    if (bits == 4) {
        const __m512i m15 = _mm512_set1_epi8(15);
        __m512i d = _mm512_dpbusd_epi32(z, _mm512_and_si512(v, m15), _mm512_load_si512(xq));
        return _mm512_dpbusd_epi32(d, BITS_TO_LOW(v, 4, 4), _mm512_load_si512(xq + 64));
    }
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512i d = _mm512_dpbusd_epi32(z, _mm512_and_si512(v, m3), _mm512_load_si512(xq));
    d = _mm512_dpbusd_epi32(d, BITS_TO_LOW(v, 2, 2), _mm512_load_si512(xq + 64));
    d = _mm512_dpbusd_epi32(d, BITS_TO_LOW(v, 4, 2), _mm512_load_si512(xq + 128));
    return _mm512_dpbusd_epi32(d, BITS_TO_LOW(v, 6, 2), _mm512_load_si512(xq + 192));
}

INLINE __m512 lane_scales(const xprep *p, const float *sf, int64_t c)
{
    if (p->bcast) return _mm512_set1_ps(sf[p->gbase[c]]);
    return _mm512_permutexvar_ps(_mm512_load_si512(p->gidx + 16 * c), _mm512_loadu_ps(sf + p->gbase[c]));
}

/* the row's scales into sf, and the vector of its zero terms s_g z_g gsq_g */
INLINE __m512 row_scales(const moeq_qmat *w, int64_t r, const xprep *p, float *sf)
{
    const int64_t ng = p->ng;
    const uint16_t *sc = w->scales + r * ng, *zp = w->zeros ? w->zeros + r * ng : NULL;
    const __m512 zsym = _mm512_set1_ps((float)(1 << (w->bits - 1)));
    __m512 zt = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; g += 16) {
        __mmask16 m = ng - g >= 16 ? 0xffff : (__mmask16)((1u << (ng - g)) - 1);
        __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, sc + g));
        __m512 z = zp ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, zp + g)) : zsym;
        _mm512_mask_storeu_ps(sf + g, m, s);
        zt = _mm512_fmadd_ps(_mm512_mul_ps(s, z), _mm512_load_ps(p->gsq + g), zt);
    }
    return zt;
}

/* One row: even and odd chunks into two accumulators, then the short last chunk. Two 3-bit
 * chunks (192 bytes) are read as three 64-byte loads, none split across cache lines when the
 * row is aligned (a chunk alone would start mid-line every other time, which slowed the
 * streamed case). */
/* Codes are prefetched this many bytes ahead from inside the chunk loop: without it a matrix
 * streamed from memory ran at 0.70 (3-bit) to 0.85 (2-bit) of the read bandwidth, as the
 * decode work kept too few loads in flight; 1-3 KB ahead gave 1.0-1.1 (docs/bench.md).
 * Prefetching whole rows ahead from the row loop did not help. */
#define PREFETCH_AHEAD 2048
INLINE float row_dot(int bits, const moeq_qmat *w, int64_t r, xprep *p)
{
    const int64_t cb = p->cc * bits / 8, rb = moeq_qmat_row_bytes(w), nfull = w->cols / p->cc;
    const uint8_t *codes = w->codes + r * rb;
    float *sf = p->sf;
    __m512 zt = row_scales(w, r, p, sf);
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 1 < nfull; c += 2) {
        __m512i d0, d1;
        {   /* past the row's end this is the next row; past the matrix's, a harmless hint */
            const char *q = (const char *)codes + c * cb + PREFETCH_AHEAD;
            _mm_prefetch(q, _MM_HINT_T0);
            _mm_prefetch(q + 64, _MM_HINT_T0);
            if (bits == 3) _mm_prefetch(q + 128, _MM_HINT_T0);
        }
        if (bits == 3) {
            const uint8_t *q = codes + c * cb;
            __m512i l1 = _mm512_loadu_si512(q + 64);
            d0 = planes3_dot(_mm512_loadu_si512(q), l1, 0, p->xq + c * p->cc);
            d1 = planes3_dot(l1, _mm512_loadu_si512(q + 128), 32, p->xq + (c + 1) * p->cc);
        } else {
            d0 = chunk_dot(bits, codes + c * cb, p->xq + c * p->cc, -1);
            d1 = chunk_dot(bits, codes + (c + 1) * cb, p->xq + (c + 1) * p->cc, -1);
        }
        a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_mul_ps(lane_scales(p, sf, c), _mm512_load_ps(p->dxl + 16 * c)), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1),
                             _mm512_mul_ps(lane_scales(p, sf, c + 1), _mm512_load_ps(p->dxl + 16 * (c + 1))), a1);
    }
    for (; c < p->nchunks; c++) {
        __m512i d = c < nfull ? chunk_dot(bits, codes + c * cb, p->xq + c * p->cc, -1)
                              : chunk_dot(bits, codes + c * cb, p->xq + c * p->cc, rb - c * cb);
        a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(lane_scales(p, sf, c), _mm512_load_ps(p->dxl + 16 * c)), a0);
    }
    return _mm512_reduce_add_ps(_mm512_sub_ps(_mm512_add_ps(a0, a1), zt));
}

#define ROWS(BITS)                                                                                                \
    static void rows_##BITS(const moeq_qmat *w, xprep *p, int64_t r0, int64_t r1, float *y)                     \
    {                                                                                                             \
        for (int64_t r = r0; r < r1; r++) y[r - r0] = row_dot(BITS, w, r, p);                                     \
    }
ROWS(2)
ROWS(3)
ROWS(4)
ROWS(8)

void moeq_vnni_gemv(const moeq_qmat *w, const float *x, int64_t r0, int64_t r1, float *y)
{
    xprep p;
    if (!prep_x(w, x, &p)) {   /* NaN/Inf in x (the float kernel propagates it) or no memory */
        moeq_kernels_avx512.gemv(w, x, r0, r1, y);
        return;
    }
    switch (w->bits) {
    case 2: rows_2(w, &p, r0, r1, y); break;
    case 3: rows_3(w, &p, r0, r1, y); break;
    case 4: rows_4(w, &p, r0, r1, y); break;
    default: rows_8(w, &p, r0, r1, y); break;
    }
    free(p.mem);
}

void moeq_vnni_gemm(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                      float *Y, int64_t ldy)
{
    if (n >= 4 && moeq_vnni_gemm_x8(w, X, n, ldx, r0, r1, Y, ldy)) return;
    moeq_x86_gemm(w, X, n, ldx, r0, r1, Y, ldy, moeq_avx2_dequant, moeq_vnni_gemv);
}

/* gate and up of an expert: the int8 GEMM's activations quantized once (n >= 4, as gemm) */
int moeq_vnni_gemm_pair(const moeq_qmat *a, const moeq_qmat *b, const float *X, int64_t n, int64_t ldx, float *Ya,
                        float *Yb, int64_t ldy)
{
    return n >= 4 && moeq_vnni_gemm_x8_pair(a, b, X, n, ldx, Ya, Yb, ldy);
}

const moeq_kernel_set moeq_kernels_vnni = { "vnni", moeq_avx2_dequant, moeq_vnni_gemv, moeq_vnni_gemm, moeq_avx512_wgemm, NULL, NULL, NULL,
                                            moeq_vnni_gemm_pair, moeq_avx512_swiglu, moeq_avx512_dsyrk,
                                            moeq_avx512_attend, NULL, moeq_avx512_fsyrk_pack,
                                            moeq_avx512_fsyrk_sum, "f32x256", 0 };
