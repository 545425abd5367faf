/* The network's last layer and the last pass of a Y model on RGB pictures.
 *
 * conv3_bf16 (CPUs with AVX-512 BF16): the last layer, a 3×3 convolution of bf16 features (NHWC,
 * channels a multiple of 32) to a few fp32 channels (1, 2, 4, 8 or 16: r² of a Y model). oneDNN
 * computes its outputs in blocks of 16 channels, so ×2's four are a quarter of its work; here
 * each (pixel, channel) sum is 16 lanes of bf16 pair products
 * over the input channels, and 16 such sums are reduced at once into 16 contiguous outputs.
 *
 * write_rgb: the network's Y phases (the last layer's r² channels, NHWC, bf16 or fp32) and the
 * chroma's low-resolution contribution to R, G and B (three float planes: M·(Cb, Cr), with the
 * BT.601 matrix M) become interleaved RGB bytes r× larger: each output row takes the phase shift
 * of its Y, the chroma planes' bicubic ×r (the 5 taps of each phase, given), the sum, rounding
 * (to nearest even, as OpenCV's saturating casts) and clamping. The path it replaces made three
 * full-size float planes (OpenCV's resize), three more sums and an interleave, where this is one
 * read of the phases and one write of the pixels (benchmarks/README.md, "Figures the code cites").
 *
 * With AVX-512 (F, BW) each 16 output pixels of a row take the chroma by permutes of 16
 * low-resolution values, the Y by one gather; with AVX2 and FMA (most x86 CPUs since 2013) each
 * 8 by permutes of 8; a plain loop does the rest of each row (and, with `generic`, everything:
 * for tests). Without either callers keep OpenCV's path: the plain loop alone is slower than it.
 *
 * write_y: the same for a Y plane alone (video kept in YCbCr, grey pictures; with AVX-512 only:
 * with AVX2 it was no faster than torch's four passes); chroma_planes: the low-resolution planes
 * write_rgb reads, from the network's RGB input.
 *
 * Built and loaded by subpixel_cli.kernels. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "build.h"
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define WIDE 1 /* 16 pixels at a time */
#define LANES 16
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NARROW 1 /* 8 pixels at a time */
#define LANES 8
#endif
#if defined(WIDE) || defined(NARROW)
#define VECTOR 1
#endif

#define TAPS 5   /* low-resolution pixels a bicubic phase reads: o = −2…2 */
#define SLACK 16 /* floats after a row buffer that a vector load may read */

/* One call's fixed numbers. t: n × th × tw × r² phases; d: n × 3 × dh × dw planes; out: n × h·r × w·r × 3. */
typedef struct {
    const void *t;
    int bf16;
    int64_t th, tw, crop_t;
    const float *d;
    int64_t dh, dw, crop_d;
    const float *taps; /* r × TAPS: taps[i·TAPS + o] weighs pixel y + o − 2 in output row y·r + i */
    int64_t r, h, w;
    float centre;
    uint8_t *out;
} Job;

static inline float phase_value(const Job *job, int64_t i) {
    if (!job->bf16) return ((const float *)job->t)[i];
    uint32_t bits = (uint32_t)((const uint16_t *)job->t)[i] << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Rounded to nearest even and clamped to 0…255, as OpenCV's saturate_cast<uchar>(float). */
static inline uint8_t level(float v) {
    if (!(v > 0.0f)) return 0; /* also NaN */
    if (v >= 255.0f) return 255;
    return (uint8_t)(int)((v + 8388608.0f) - 8388608.0f); /* ±2²³ rounds to a whole number, nearest even */
}

/* The chroma rows of output row y·r + i at low resolution: vrow[c·stride + x], x < w + 4 (two
 * pixels of margin each side for the horizontal taps). */
static void vertical(const Job *job, int64_t k, int64_t y, int64_t i, float *vrow, int64_t stride) {
    const int64_t cols = job->w + TAPS - 1;
    for (int c = 0; c < 3; c++) {
        float *v = vrow + c * stride;
        const float *plane = job->d + ((k * 3 + c) * job->dh + job->crop_d + y) * job->dw + job->crop_d;
        for (int64_t x = 0; x < cols; x++) v[x] = 0.0f;
        for (int o = 0; o < TAPS; o++) {
            const float wt = job->taps[i * TAPS + o];
            if (wt == 0.0f) continue;
            const float *src = plane + o * job->dw;
            for (int64_t x = 0; x < cols; x++) v[x] += wt * src[x];
        }
    }
}

/* Output pixels [x0, w·r) of a row whose vertical pass is in vrow, one at a time. */
static void pixels_from(const Job *job, int64_t trow, const float *vrow, int64_t stride, int64_t x0, uint8_t *dst) {
    const int64_t r = job->r, r2 = r * r;
    for (int64_t x = x0; x < job->w * r; x++) {
        const int64_t X = x / r, j = x % r;
        const float *wh = job->taps + j * TAPS;
        const float yv = phase_value(job, trow + X * r2 + j) + job->centre;
        for (int c = 0; c < 3; c++) {
            const float *v = vrow + c * stride + X;
            float chroma = 0.0f;
            for (int o = 0; o < TAPS; o++) chroma += wh[o] * v[o];
            dst[x * 3 + c] = level(yv + chroma);
        }
    }
}

#ifdef VECTOR
/* Per output column x of a row (the same for every row): for the block of LANES pixels b = x / LANES,
 * rel[x] = x / r − (LANES·b) / r (which of the block's LANES low-resolution values it reads first),
 * yoff[x] = (x / r)·r² + x % r (its phase, less the row's), wts[o·cols + x] = its horizontal taps.
 * For r ≥ 2 rel + 4 stays below LANES, so the block's taps are permutes of LANES values. */
typedef struct {
    int32_t *rel, *yoff;
    float *wts;
} Columns;

static int columns(const Job *job, Columns *col) {
    const int64_t r = job->r, cols = job->w * r;
    col->rel = malloc(sizeof(int32_t) * (size_t)cols);
    col->yoff = malloc(sizeof(int32_t) * (size_t)cols);
    col->wts = malloc(sizeof(float) * TAPS * (size_t)cols);
    if (col->rel == NULL || col->yoff == NULL || col->wts == NULL) return 0;
    for (int64_t x = 0; x < cols; x++) {
        const int64_t X = x / r, j = x % r;
        col->rel[x] = (int32_t)(X - (x / LANES * LANES) / r);
        col->yoff[x] = (int32_t)(X * r * r + j);
        for (int o = 0; o < TAPS; o++) col->wts[o * cols + x] = job->taps[j * TAPS + o];
    }
    return 1;
}
#endif

#ifdef WIDE
/* The 16 phases at element offsets `off` from `t` + `trow` as floats: for bf16 a 32-bit gather
 * whose low half is the phase (it reads 2 bytes past the last one: callers keep the very last row
 * of t to the plain loop). */
static inline __m512 gather_phases(const void *t, int bf16, int64_t trow, __m512i off) {
    if (bf16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_i32gather_epi32(off, (const uint16_t *)t + trow, 2), 16));
    return _mm512_i32gather_ps(off, (const float *)t + trow, 4);
}

/* 16 bytes each of R, G and B as 48 interleaved bytes. */
static inline void store_rgb(uint8_t *dst, __m128i r, __m128i g, __m128i b) {
    const __m128i m_r0 = _mm_setr_epi8(0, -1, -1, 1, -1, -1, 2, -1, -1, 3, -1, -1, 4, -1, -1, 5);
    const __m128i m_g0 = _mm_setr_epi8(-1, 0, -1, -1, 1, -1, -1, 2, -1, -1, 3, -1, -1, 4, -1, -1);
    const __m128i m_b0 = _mm_setr_epi8(-1, -1, 0, -1, -1, 1, -1, -1, 2, -1, -1, 3, -1, -1, 4, -1);
    const __m128i m_r1 = _mm_setr_epi8(-1, -1, 6, -1, -1, 7, -1, -1, 8, -1, -1, 9, -1, -1, 10, -1);
    const __m128i m_g1 = _mm_setr_epi8(5, -1, -1, 6, -1, -1, 7, -1, -1, 8, -1, -1, 9, -1, -1, 10);
    const __m128i m_b1 = _mm_setr_epi8(-1, 5, -1, -1, 6, -1, -1, 7, -1, -1, 8, -1, -1, 9, -1, -1);
    const __m128i m_r2 = _mm_setr_epi8(-1, 11, -1, -1, 12, -1, -1, 13, -1, -1, 14, -1, -1, 15, -1, -1);
    const __m128i m_g2 = _mm_setr_epi8(-1, -1, 11, -1, -1, 12, -1, -1, 13, -1, -1, 14, -1, -1, 15, -1);
    const __m128i m_b2 = _mm_setr_epi8(10, -1, -1, 11, -1, -1, 12, -1, -1, 13, -1, -1, 14, -1, -1, 15);
    __m128i p0 = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(r, m_r0), _mm_shuffle_epi8(g, m_g0)), _mm_shuffle_epi8(b, m_b0));
    __m128i p1 = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(r, m_r1), _mm_shuffle_epi8(g, m_g1)), _mm_shuffle_epi8(b, m_b1));
    __m128i p2 = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(r, m_r2), _mm_shuffle_epi8(g, m_g2)), _mm_shuffle_epi8(b, m_b2));
    _mm_storeu_si128((__m128i *)dst, p0);
    _mm_storeu_si128((__m128i *)(dst + 16), p1);
    _mm_storeu_si128((__m128i *)(dst + 32), p2);
}

/* 16 levels: v clamped to 0…255 first (NaN to 0; beyond ±2³¹ the conversion gives INT_MIN),
 * rounded to nearest even. */
static inline __m128i levels16(__m512 v) {
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
    return _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(v));
}

/* Whole 16-pixel blocks of a row; returns where the rest starts. */
static int64_t blocks16(const Job *job, const Columns *col, int64_t trow, const float *vrow, int64_t stride,
                        uint8_t *dst) {
    const int64_t r = job->r, cols = job->w * r;
    const __m512 centre = _mm512_set1_ps(job->centre);
    int64_t x0 = 0;
    for (; x0 + LANES <= cols; x0 += LANES) {
        const int64_t X0 = x0 / r;
        const __m512i rel = _mm512_loadu_si512(col->rel + x0);
        __m512 v[3], acc[3];
        for (int c = 0; c < 3; c++) {
            v[c] = _mm512_loadu_ps(vrow + c * stride + X0);
            acc[c] = _mm512_setzero_ps();
        }
        for (int o = 0; o < TAPS; o++) {
            const __m512 wt = _mm512_loadu_ps(col->wts + o * cols + x0);
            const __m512i idx = _mm512_add_epi32(rel, _mm512_set1_epi32(o));
            for (int c = 0; c < 3; c++) acc[c] = _mm512_fmadd_ps(wt, _mm512_permutexvar_ps(idx, v[c]), acc[c]);
        }
        const __m512 yv = _mm512_add_ps(gather_phases(job->t, job->bf16, trow, _mm512_loadu_si512(col->yoff + x0)),
                                        centre);
        store_rgb(dst + x0 * 3, levels16(_mm512_add_ps(yv, acc[0])), levels16(_mm512_add_ps(yv, acc[1])),
                  levels16(_mm512_add_ps(yv, acc[2])));
    }
    return x0;
}

/* One block of 16 pixels of a Y plane: v + centre clamped to 0…255 (NaN to 0) and truncated. */
static inline void store_y(uint8_t *dst, __m512 v, __m512 centre) {
    v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, centre), _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
    _mm_storeu_si128((__m128i *)dst, _mm512_cvtusepi32_epi8(_mm512_cvttps_epi32(v)));
}
#endif

#ifdef NARROW
/* The AVX2 forms of the above, 8 pixels at a time. */
static inline __m256 gather_phases(const void *t, int bf16, int64_t trow, __m256i off) {
    if (bf16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_i32gather_epi32((const int *)((const uint16_t *)t + trow), off, 2), 16));
    return _mm256_i32gather_ps((const float *)t + trow, off, 4);
}

/* 8 bytes each of R, G and B (low halves) as 24 interleaved bytes. */
static inline void store_rgb(uint8_t *dst, __m128i r, __m128i g, __m128i b) {
    const __m128i rg = _mm_unpacklo_epi64(r, g); /* r0…r7 g0…g7 */
    const __m128i m_rg0 = _mm_setr_epi8(0, 8, -1, 1, 9, -1, 2, 10, -1, 3, 11, -1, 4, 12, -1, 5);
    const __m128i m_b0 = _mm_setr_epi8(-1, -1, 0, -1, -1, 1, -1, -1, 2, -1, -1, 3, -1, -1, 4, -1);
    const __m128i m_rg1 = _mm_setr_epi8(13, -1, 6, 14, -1, 7, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m128i m_b1 = _mm_setr_epi8(-1, 5, -1, -1, 6, -1, -1, 7, -1, -1, -1, -1, -1, -1, -1, -1);
    _mm_storeu_si128((__m128i *)dst, _mm_or_si128(_mm_shuffle_epi8(rg, m_rg0), _mm_shuffle_epi8(b, m_b0)));
    _mm_storel_epi64((__m128i *)(dst + 16), _mm_or_si128(_mm_shuffle_epi8(rg, m_rg1), _mm_shuffle_epi8(b, m_b1)));
}

/* 8 levels in the low half, as levels16. */
static inline __m128i levels8(__m256 v) {
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(255.0f));
    const __m256i q = _mm256_cvtps_epi32(v);
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    return _mm_packus_epi16(w, w);
}

static int64_t blocks8(const Job *job, const Columns *col, int64_t trow, const float *vrow, int64_t stride,
                       uint8_t *dst) {
    const int64_t r = job->r, cols = job->w * r;
    const __m256 centre = _mm256_set1_ps(job->centre);
    int64_t x0 = 0;
    for (; x0 + LANES <= cols; x0 += LANES) {
        const int64_t X0 = x0 / r;
        const __m256i rel = _mm256_loadu_si256((const __m256i *)(col->rel + x0));
        __m256 v[3], acc[3];
        for (int c = 0; c < 3; c++) {
            v[c] = _mm256_loadu_ps(vrow + c * stride + X0);
            acc[c] = _mm256_setzero_ps();
        }
        for (int o = 0; o < TAPS; o++) {
            const __m256 wt = _mm256_loadu_ps(col->wts + o * cols + x0);
            const __m256i idx = _mm256_add_epi32(rel, _mm256_set1_epi32(o));
            for (int c = 0; c < 3; c++) acc[c] = _mm256_fmadd_ps(wt, _mm256_permutevar8x32_ps(v[c], idx), acc[c]);
        }
        const __m256i off = _mm256_loadu_si256((const __m256i *)(col->yoff + x0));
        const __m256 yv = _mm256_add_ps(gather_phases(job->t, job->bf16, trow, off), centre);
        store_rgb(dst + x0 * 3, levels8(_mm256_add_ps(yv, acc[0])), levels8(_mm256_add_ps(yv, acc[1])),
                  levels8(_mm256_add_ps(yv, acc[2])));
    }
    return x0;
}
#endif

#ifdef WIDE
/* out[l] = sum of v[l]'s 16 lanes, for 16 vectors, in four rounds of shuffles and adds. */
static inline __m512 reduce16(const __m512 *v) {
    __m512 a[8], b[4], c[2];
    for (int i = 0; i < 8; i++) /* lanes 0–7: v[2i] folded to 8; 8–15: v[2i + 1] */
        a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; i++) /* quad q: v[4i + q] folded to 4 */
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; i++) /* quad q: v[8i + q] in lanes 0–1, v[8i + 4 + q] in 2–3 */
        c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 d = _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* lane 4q + m holds v[4m + q]'s sum */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, d);
}
#endif

#ifdef NARROW
/* out[l] = sum of v[l]'s 8 lanes, for 8 vectors: two rounds of horizontal adds, then the halves. */
static inline __m256 reduce8(const __m256 *v) {
    const __m256 a0 = _mm256_hadd_ps(v[0], v[1]), a1 = _mm256_hadd_ps(v[2], v[3]);
    const __m256 a2 = _mm256_hadd_ps(v[4], v[5]), a3 = _mm256_hadd_ps(v[6], v[7]);
    const __m256 b0 = _mm256_hadd_ps(a0, a1), b1 = _mm256_hadd_ps(a2, a3); /* v[0..3] | same, upper lanes */
    return _mm256_add_ps(_mm256_permute2f128_ps(b0, b1, 0x20), _mm256_permute2f128_ps(b0, b1, 0x31));
}

static inline float sum8(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}
#endif

#ifdef VECTOR
/* conv3_f32's vectors: LANES floats (AVX-512 or AVX2). */
#ifdef WIDE
typedef __m512 vecf;
#define VLOAD _mm512_loadu_ps
#define VFMA _mm512_fmadd_ps
#define VZERO _mm512_setzero_ps
#define VADD _mm512_add_ps
#define VSTORE _mm512_storeu_ps
#define VREDUCE reduce16
#define VSUM _mm512_reduce_add_ps
#else
typedef __m256 vecf;
#define VLOAD _mm256_loadu_ps
#define VFMA _mm256_fmadd_ps
#define VZERO _mm256_setzero_ps
#define VADD _mm256_add_ps
#define VSTORE _mm256_storeu_ps
#define VREDUCE reduce8
#define VSUM sum8
#endif

/* The tiling both conv3 kernels share, written once as a macro and made twice below: NAME(x, n,
 * h, w, c, wts, bias, o, out) for features x (n × h × w × c of ELEM, c a multiple of MULTIPLE),
 * weights wts (o × 3 × 3 × c of ELEM), bias (o floats) and out (n × (h − 2) × (w − 2) × o floats),
 * o 1, 2, 4, 8 or 16 and at most V; rows are shared among OpenMP's threads; returns 0, or −1 for
 * an o or c it does not take. Each output row is cut into blocks of V/o pixels whose V sums
 * (o outputs each, STEP channels a vector) stay in V registers and are reduced at once into V
 * contiguous outputs; the row's last pixels go one at a time. ROW is its row function, for
 * o = O (a constant in each case of the switch, so that the sums stay in registers). Vectors:
 * VACC the sums', LOAD_IN a vector of STEP features (or weights), MAC(acc, in, w) their product
 * added, ZERO, LOAD (floats), ADD, STORE, REDUCE (V vectors to one of their sums), SUM (one). */
#define CONV3(NAME, ROW, ELEM, VACC, V, STEP, MULTIPLE, LOAD_IN, MAC, ZERO, LOAD, ADD, STORE, REDUCE, SUM)    \
    static inline __attribute__((always_inline)) void ROW(const ELEM *rows, int64_t w, int64_t c,              \
                                                          const ELEM *wts, const float *bias, VACC bias_v,     \
                                                          float *dst, const int O) {                           \
        const int64_t ow = w - 2, chunks = c / STEP;                                                           \
        const int per = V / O;                                                                                 \
        int64_t ox = 0;                                                                                        \
        for (; ox + per <= ow; ox += per) {                                                                    \
            VACC acc[V];                                                                                       \
            for (int a = 0; a < V; a++) acc[a] = ZERO();                                                       \
            for (int tap = 0; tap < 9; tap++) {                                                                \
                const int64_t ky = tap / 3, kx = tap % 3;                                                      \
                for (int64_t q = 0; q < chunks; q++)                                                           \
                    for (int p = 0; p < per; p++) {                                                            \
                        const __typeof__(LOAD_IN(rows)) in = LOAD_IN(rows + (ky * w + ox + p + kx) * c + q * STEP); \
                        for (int j = 0; j < O; j++)                                                            \
                            acc[p * O + j] = MAC(acc[p * O + j], in, LOAD_IN(wts + (j * 9 + tap) * c + q * STEP)); \
                    }                                                                                          \
            }                                                                                                  \
            STORE(dst + ox * O, ADD(REDUCE(acc), bias_v));                                                     \
        }                                                                                                      \
        for (; ox < ow; ox++)                                                                                  \
            for (int j = 0; j < O; j++) {                                                                      \
                VACC acc = ZERO();                                                                             \
                for (int tap = 0; tap < 9; tap++)                                                              \
                    for (int64_t q = 0; q < chunks; q++)                                                       \
                        acc = MAC(acc, LOAD_IN(rows + ((tap / 3) * w + ox + tap % 3) * c + q * STEP),          \
                                  LOAD_IN(wts + (j * 9 + tap) * c + q * STEP));                                \
                dst[ox * O + j] = SUM(acc) + bias[j];                                                          \
            }                                                                                                  \
    }                                                                                                          \
                                                                                                               \
    int NAME(const ELEM *x, int64_t n, int64_t h, int64_t w, int64_t c, const ELEM *wts, const float *bias,    \
             int64_t o, float *out) {                                                                          \
        if (c % MULTIPLE != 0 || !(o == 1 || o == 2 || o == 4 || o == 8 || o == 16) || o > V || h < 3 || w < 3) \
            return -1;                                                                                         \
        const int64_t oh = h - 2, ow = w - 2;                                                                  \
        float b[V];                                                                                            \
        for (int l = 0; l < V; l++) b[l] = bias[l % o];                                                        \
        const VACC bias_v = LOAD(b);                                                                           \
        _Pragma("omp parallel for collapse(2) schedule(static)")                                               \
        for (int64_t k = 0; k < n; k++)                                                                        \
            for (int64_t y = 0; y < oh; y++) {                                                                 \
                const ELEM *rows = x + ((k * h + y) * w) * c;                                                  \
                float *dst = out + ((k * oh + y) * ow) * o;                                                    \
                switch (o) {                                                                                   \
                case 1: ROW(rows, w, c, wts, bias, bias_v, dst, 1); break;                                     \
                case 2: ROW(rows, w, c, wts, bias, bias_v, dst, 2); break;                                     \
                case 4: ROW(rows, w, c, wts, bias, bias_v, dst, 4); break;                                     \
                case 8: ROW(rows, w, c, wts, bias, bias_v, dst, 8); break;                                     \
                default: ROW(rows, w, c, wts, bias, bias_v, dst, V); break;                                    \
                }                                                                                              \
            }                                                                                                  \
        return 0;                                                                                              \
    }

/* conv3_f32: LANES channels a vector (AVX-512 or AVX2), one fused multiply-add per (pixel,
 * output, tap, LANES channels): the last layer of the fp32 path, and of int8's where the CPU has
 * no bf16 arithmetic (the layers around conv2 then run in fp32); channels in 16s. */
#define FMA(acc, in, w) VFMA(in, w, acc)
CONV3(conv3_f32, conv3_row_f32, float, vecf, LANES, LANES, 16, VLOAD, FMA, VZERO, VLOAD, VADD, VSTORE, VREDUCE, VSUM)
#endif

#ifdef __AVX512BF16__
/* conv3_bf16: each (pixel, output) sum is 16 lanes of bf16 pair products over 32 input channels a
 * step (the weights rounded to bf16, the sums in fp32, as oneDNN's bf16 convolution). */
#define LOAD_BF16(p) ((__m512bh)_mm512_loadu_si512(p))
#define DOT_BF16(acc, in, w) _mm512_dpbf16_ps(acc, in, w)
CONV3(conv3_bf16, conv3_row_bf16, uint16_t, __m512, 16, 32, 32, LOAD_BF16, DOT_BF16, _mm512_setzero_ps, _mm512_loadu_ps,
      _mm512_add_ps, _mm512_storeu_ps, reduce16, _mm512_reduce_add_ps)
#endif

#ifdef VECTOR
#define WRITE_LANES LANES
#else
#define WRITE_LANES 0
#endif
/* Bits 0–7: the pixels write_rgb takes at a time, 16 (AVX-512), 8 (AVX2) or 0 where it has only
 * the plain loop (write_y has a vector path with AVX-512 only; conv3_f32 comes with either);
 * bit 256: OpenMP; bit 512: conv3_bf16 (AVX-512 BF16). */
int features(void) { return WRITE_LANES | BUILT_OPENMP << 8 | BUILT_BF16 << 9; }

/* t: n × th × tw × r² phases (bf16 when t_bf16, else fp32), read from row and column crop_t;
 * d: n × 3 × dh × dw float planes, read from row and column crop_d (two pixels of margin before
 * each output pixel's own); taps: r × 5; out: n × (h·r) × (w·r) × 3 bytes. `generic`: the plain
 * loop even where a vector one is built (for tests). Output rows are shared among OpenMP's
 * threads (torch's pool: see int8.c). Returns 0, or −1 where it ran out of memory. */
int write_rgb(const void *t, int t_bf16, int64_t n, int64_t th, int64_t tw, int64_t crop_t, const float *d,
               int64_t dh, int64_t dw, int64_t crop_d, const float *taps, int64_t r, float centre, uint8_t *out,
               int64_t h, int64_t w, int generic) {
    Job job = {t, t_bf16, th, tw, crop_t, d, dh, dw, crop_d, taps, r, h, w, centre, out};
    const int64_t rows = h * r, cols = w * r, stride = w + TAPS - 1 + SLACK;
    int wide = 0, failed = 0;
#ifdef VECTOR
    Columns col = {NULL, NULL, NULL};
    /* The gather reads 32 bits at a bf16 phase: 2 bytes past the very last one, whose row takes
     * the plain loop; yoff must fit 32 bits; r ≥ 2 keeps a block's taps within its LANES values. */
    wide = !generic && r >= 2 && tw * r * r < INT32_MAX / 2 && columns(&job, &col);
#else
    (void)generic;
#endif
#pragma omp parallel
    {
        float *vrow = calloc((size_t)(3 * stride), sizeof(float));
#pragma omp for collapse(2) schedule(static)
        for (int64_t k = 0; k < n; k++)
            for (int64_t Y = 0; Y < rows; Y++) {
                const int64_t y = Y / r, i = Y % r;
                uint8_t *dst = out + (k * rows + Y) * cols * 3;
                const int64_t trow = ((k * th + y + crop_t) * tw + crop_t) * r * r + i * r;
                if (vrow == NULL) { /* out of memory: reported below */
                    failed = 1;
                    continue;
                }
                vertical(&job, k, y, i, vrow, stride);
                int64_t x0 = 0;
#ifdef WIDE
                if (wide && !(k == n - 1 && Y == rows - 1)) x0 = blocks16(&job, &col, trow, vrow, stride, dst);
#elif defined(NARROW)
                if (wide && !(k == n - 1 && Y == rows - 1)) x0 = blocks8(&job, &col, trow, vrow, stride, dst);
#endif
                pixels_from(&job, trow, vrow, stride, x0, dst);
            }
        free(vrow);
    }
#ifdef VECTOR
    free(col.rel);
    free(col.yoff);
    free(col.wts);
#endif
    (void)wide;
    return failed ? -1 : 0;
}

/* write_y: the Y plane alone (video that stays in YCbCr): out = the phase shift of t plus centre,
 * clamped to 0…255 and truncated (the layer's bias holds the ½ that makes it rounding), as torch's
 * float → uint8 copy. t: n × th × tw × r² (bf16 when t_bf16, else fp32) from row and column crop_t;
 * out: n planes of (h·r) × (w·r) bytes, frame_stride bytes apart (the planes of I420 frames).
 * Returns 0, or −1 where it ran out of memory. */
int write_y(const void *t, int t_bf16, int64_t n, int64_t th, int64_t tw, int64_t crop_t, int64_t r, float centre,
            uint8_t *out, int64_t h, int64_t w, int64_t frame_stride, int generic) {
    Job job = {t, t_bf16, th, tw, crop_t, NULL, 0, 0, 0, NULL, r, h, w, centre, out};
    const int64_t rows = h * r, cols = w * r, r2 = r * r;
    int32_t *yoff = malloc(sizeof(int32_t) * (size_t)cols);
    if (yoff == NULL) return -1;
    for (int64_t x = 0; x < cols; x++) yoff[x] = (int32_t)((x / r) * r2 + x % r);
    int wide = 0;
#ifdef WIDE /* with AVX2 its gathers were no faster than torch's passes (benchmarks/README.md) */
    wide = !generic && tw * r2 < INT32_MAX / 2;
#else
    (void)generic;
#endif
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t k = 0; k < n; k++)
        for (int64_t Y = 0; Y < rows; Y++) {
            const int64_t y = Y / r, i = Y % r;
            uint8_t *dst = out + k * frame_stride + Y * cols;
            const int64_t trow = ((k * th + y + crop_t) * tw + crop_t) * r2 + i * r;
            int64_t x = 0;
#ifdef WIDE
            if (wide && !(k == n - 1 && Y == rows - 1)) { /* the last row: the gather would read past t */
                const __m512 c = _mm512_set1_ps(centre);
                for (; x + LANES <= cols; x += LANES)
                    store_y(dst + x, gather_phases(t, t_bf16, trow, _mm512_loadu_si512(yoff + x)), c);
            }
#endif
            for (; x < cols; x++) {
                float v = phase_value(&job, trow + yoff[x]) + centre;
                dst[x] = !(v > 0.0f) ? 0 : v >= 255.0f ? 255 : (uint8_t)v;
            }
        }
    free(yoff);
    (void)wide;
    return 0;
}

/* chroma_planes: the chroma's low-resolution contribution to R, G and B, m·rgb per pixel (m: 3×3,
 * row-major), from n × h × w × 3 floats (NHWC: the network's input) into n × 3 × h × w planes, the
 * planes write_rgb reads, in one pass where torch's einsum permutes and copies. */
void chroma_planes(const float *x, int64_t n, int64_t h, int64_t w, const float *m, float *out) {
    const float m00 = m[0], m01 = m[1], m02 = m[2], m10 = m[3], m11 = m[4], m12 = m[5], m20 = m[6], m21 = m[7],
                m22 = m[8];
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t k = 0; k < n; k++)
        for (int64_t y = 0; y < h; y++) {
            const float *src = x + ((k * h + y) * w) * 3;
            float *p0 = out + ((k * 3 + 0) * h + y) * w, *p1 = p0 + h * w, *p2 = p1 + h * w;
            for (int64_t i = 0; i < w; i++) {
                const float r = src[3 * i], g = src[3 * i + 1], b = src[3 * i + 2];
                p0[i] = m00 * r + m01 * g + m02 * b;
                p1[i] = m10 * r + m11 * g + m12 * b;
                p2[i] = m20 * r + m21 * g + m22 * b;
            }
        }
}
