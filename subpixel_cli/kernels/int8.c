/* The int8 path's passes that torch cannot fuse.
 *
 * conv1_u8: the first layer in one pass: a 5×5 convolution of one plane to 64 channels, tanh,
 * and each channel's quantization to 8-bit levels, written as uint8 NHWC (what oneDNN's int8
 * convolution reads). torch would take three passes over the 64 channels (conv + tanh, the
 * level multiply-add, the quantizer), each reading and writing the network's largest tensor.
 *
 * tanh_bf16, tanh_f32: tanh in place on conv2's output (bf16, or fp32 on CPUs without bf16
 * arithmetic), where torch took a 1×1 identity convolution with oneDNN's tanh post-op.
 *
 * Portable C with GCC/Clang vector extensions: 16-lane float vectors become one AVX-512
 * register, two AVX ones or four SSE/NEON ones, whatever the compiler targets (-march=native).
 * Built and loaded by subpixel_cli.kernels. */
#include <stdint.h>
#include <stdlib.h>

#include "build.h"
#ifdef __AVX512BF16__
#include <immintrin.h>
#endif

#define CH 64             /* output channels */
#define K 5               /* kernel side */
#define LANES 16
#define VECS (CH / LANES) /* vectors per pixel */
#define BLOCK 4           /* pixels per inner block: 16 accumulators */

typedef float v16 __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t v16i __attribute__((vector_size(LANES * sizeof(int32_t))));
typedef uint8_t v16u8 __attribute__((vector_size(LANES)));

static inline v16 splat(float x) { return (v16){0} + x; }

/* Lane-wise min and max, by masks (C has no vector ?:). */
static inline v16 pick(v16i take_a, v16 a, v16 b) { return (v16)(((v16i)a & take_a) | ((v16i)b & ~take_a)); }
static inline v16 vmin(v16 a, v16 b) { return pick(a < b, a, b); }
static inline v16 vmax(v16 a, v16 b) { return pick(a > b, a, b); }

static inline v16 load(const float *p) {
    v16 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/* tanh as a rational function of odd degree 5 over even degree 6 on [-4.97, 4.97] (a least-squares
 * fit pushed towards minimax; outside, tanh(±4.97)): within 2.2e-6 of tanh inside and 1e-4 beyond,
 * where tanh is within 1e-4 of ±1 — a hundredth of the finest level step conv1's levels can
 * have (and of bf16's step near 1). Only multiply-adds and one division, fewer than the
 * polynomial of degree 13 it replaced (the figures: benchmarks/README.md, "Figures the code cites"). */
static inline v16 tanh16(v16 x) {
    const v16 lim = splat(4.97f);
    x = vmax(vmin(x, lim), -lim);
    v16 x2 = x * x;
    v16 p = (x2 * 1.62547e-03f + 1.1642546e-01f) * x2 + 9.9999198e-01f;
    v16 q = ((x2 * 6.37380839e-05f + 1.82334410e-02f) * x2 + 4.49729481e-01f) * x2 + 1.0f;
    return p * x / q;
}

/* Levels round(gain·tanh(acc) + shift), clamped to 0…255, stored as 16 bytes. */
static inline void store_levels(uint8_t *out, v16 acc, v16 gain, v16 shift) {
    v16 level = tanh16(acc) * gain + shift + 0.5f;
    level = vmax(vmin(level, splat(255.0f)), splat(0.0f));
    v16u8 bytes = __builtin_convertvector(__builtin_convertvector(level, v16i), v16u8);
    __builtin_memcpy(out, &bytes, sizeof bytes);
}

/* Output pixels [ox, ow) of one row (the 5 input rows from `rows` on), in fp32. */
static void conv1_pixels(const float *rows, int64_t width, int64_t ox, const float *w, const v16 *b, const v16 *g,
                         const v16 *s, uint8_t *dst) {
    const int64_t ow = width - (K - 1);
    for (; ox + BLOCK <= ow; ox += BLOCK) {
        v16 acc[BLOCK][VECS];
        for (int p = 0; p < BLOCK; p++)
            for (int v = 0; v < VECS; v++) acc[p][v] = b[v];
        for (int ky = 0; ky < K; ky++) {
            const float *src = rows + ky * width + ox;
            for (int kx = 0; kx < K; kx++) {
                const float *wt = w + (ky * K + kx) * CH;
                v16 wv[VECS];
                for (int v = 0; v < VECS; v++) wv[v] = load(wt + v * LANES);
                for (int p = 0; p < BLOCK; p++) {
                    v16 xv = splat(src[p + kx]);
                    for (int v = 0; v < VECS; v++) acc[p][v] += wv[v] * xv;
                }
            }
        }
        for (int p = 0; p < BLOCK; p++)
            for (int v = 0; v < VECS; v++) store_levels(dst + (ox + p) * CH + v * LANES, acc[p][v], g[v], s[v]);
    }
    for (; ox < ow; ox++) { /* the last pixels of a row, one at a time */
        v16 acc[VECS];
        for (int v = 0; v < VECS; v++) acc[v] = b[v];
        for (int ky = 0; ky < K; ky++)
            for (int kx = 0; kx < K; kx++) {
                v16 xv = splat(rows[ky * width + ox + kx]);
                for (int v = 0; v < VECS; v++) acc[v] += load(w + (ky * K + kx) * CH + v * LANES) * xv;
            }
        for (int v = 0; v < VECS; v++) store_levels(dst + ox * CH + v * LANES, acc[v], g[v], s[v]);
    }
}

#ifdef __AVX512BF16__
/* With AVX-512 BF16 the taps go in pairs through vdpbf16ps (two multiply-adds per lane, fp32
 * sums): 15 pair-steps per pixel instead of 25 fused multiply-adds. Inputs and weights are
 * rounded to bf16 as oneDNN's bf16 convolution rounds them (exact for 8-bit levels). */
#define PAIRS (K * 3) /* (0,1) (2,3) (4,–) in each kernel row */

static inline uint32_t bf16_bits(float f) {
    uint32_t u;
    __builtin_memcpy(&u, &f, sizeof u);
    return (u + 0x7FFF + ((u >> 16) & 1)) >> 16; /* round to nearest even */
}

/* wp[(ky·3 + t)·VECS + v]: channels v·16… of taps (ky, 2t) and (ky, 2t + 1) as bf16 pairs. */
static void pair_weights(const float *w, __m512bh *wp) {
    for (int ky = 0; ky < K; ky++)
        for (int t = 0; t < 3; t++)
            for (int v = 0; v < VECS; v++) {
                uint32_t lanes[LANES];
                for (int c = 0; c < LANES; c++) {
                    int ch = v * LANES + c, kx = 2 * t;
                    uint32_t second = kx + 1 < K ? bf16_bits(w[(ky * K + kx + 1) * CH + ch]) : 0;
                    lanes[c] = bf16_bits(w[(ky * K + kx) * CH + ch]) | second << 16;
                }
                __builtin_memcpy(&wp[(ky * 3 + t) * VECS + v], lanes, sizeof lanes);
            }
}

/* One output row; `pairs` holds 2·5·width words of scratch: (x[j], x[j+1]) and (x[j], 0). */
static void conv1_row(const float *rows, int64_t width, const float *w, const __m512bh *wp, const v16 *b,
                      const v16 *g, const v16 *s, uint8_t *dst, uint32_t *pairs) {
    const int64_t ow = width - (K - 1);
    uint32_t *both = pairs, *alone = pairs + K * width;
    for (int ky = 0; ky < K; ky++)
        for (int64_t j = 0; j < width; j++) {
            uint32_t a = bf16_bits(rows[ky * width + j]);
            both[ky * width + j] = a | (j + 1 < width ? bf16_bits(rows[ky * width + j + 1]) : 0) << 16;
            alone[ky * width + j] = a;
        }
    int64_t ox = 0;
    for (; ox + BLOCK <= ow; ox += BLOCK) {
        __m512 acc[BLOCK][VECS];
        for (int p = 0; p < BLOCK; p++)
            for (int v = 0; v < VECS; v++) acc[p][v] = (__m512)b[v];
        for (int ky = 0; ky < K; ky++)
            for (int t = 0; t < 3; t++) {
                const uint32_t *src = (t < 2 ? both : alone) + ky * width + ox + 2 * t;
                const __m512bh *wt = wp + (ky * 3 + t) * VECS;
                for (int p = 0; p < BLOCK; p++) {
                    __m512bh xv = (__m512bh)_mm512_set1_epi32((int)src[p]);
                    for (int v = 0; v < VECS; v++) acc[p][v] = _mm512_dpbf16_ps(acc[p][v], wt[v], xv);
                }
            }
        for (int p = 0; p < BLOCK; p++)
            for (int v = 0; v < VECS; v++)
                store_levels(dst + (ox + p) * CH + v * LANES, (v16)acc[p][v], g[v], s[v]);
    }
    conv1_pixels(rows, width, ox, w, b, g, s, dst); /* the last few, in fp32 */
}
#endif

/* Bit 1: OpenMP; bit 2: conv1_u8's taps go through bf16 dot products (weights rounded to bf16),
 * else they stay in fp32. */
int features(void) { return BUILT_OPENMP | BUILT_BF16 << 1; }

/* n planes, each height × width floats (row-major, one after the other):
 *   w: 25 × 64 weights, tap-major (w[(ky·5 + kx)·64 + c]); bias, gain, shift: 64 each
 *   out: n × (height − 4) × (width − 4) × 64 levels
 * Rows are shared among OpenMP's threads: built with -fopenmp, the kernel binds to the libgomp
 * that torch has loaded (same soname), so it uses torch's thread pool and its thread count. */
void conv1_u8(const float *x, int64_t n, int64_t height, int64_t width, const float *w, const float *bias,
              const float *gain, const float *shift, uint8_t *out) {
    const int64_t oh = height - (K - 1), ow = width - (K - 1);
    v16 g[VECS], s[VECS], b[VECS];
    for (int v = 0; v < VECS; v++) {
        g[v] = load(gain + v * LANES);
        s[v] = load(shift + v * LANES);
        b[v] = load(bias + v * LANES);
    }
#ifdef __AVX512BF16__
    __m512bh wp[PAIRS * VECS];
    pair_weights(w, wp);
    float wr[K * K * CH]; /* the same bf16 weights as floats, for the pixels at the ends of rows */
    for (int i = 0; i < K * K * CH; i++) {
        uint32_t bits = bf16_bits(w[i]) << 16;
        __builtin_memcpy(&wr[i], &bits, sizeof bits);
    }
    w = wr;
#pragma omp parallel
    {
        uint32_t *pairs = malloc(sizeof(uint32_t) * 2 * K * (size_t)width);
#pragma omp for collapse(2) schedule(static)
        for (int64_t k = 0; k < n; k++)
            for (int64_t y = 0; y < oh; y++) {
                const float *rows = x + (k * height + y) * width;
                uint8_t *dst = out + ((k * oh + y) * ow) * CH;
                if (pairs != NULL)
                    conv1_row(rows, width, w, wp, b, g, s, dst, pairs);
                else
                    conv1_pixels(rows, width, 0, w, b, g, s, dst);
            }
        free(pairs);
    }
#else
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t k = 0; k < n; k++)
        for (int64_t y = 0; y < oh; y++)
            conv1_pixels(x + (k * height + y) * width, width, 0, w, b, g, s, out + ((k * oh + y) * ow) * CH);
#endif
}

typedef uint16_t v16u16 __attribute__((vector_size(LANES * sizeof(uint16_t))));

/* Up to LANES numbers at p into a vector (the rest of it 0), and back: whole blocks at once, the
 * short last block of an array by its length. */
#define LOAD_BLOCK(v, p, count) \
    if ((count) == LANES) __builtin_memcpy(&(v), (p), sizeof(v)); else __builtin_memcpy(&(v), (p), (count) * sizeof *(p))
#define STORE_BLOCK(p, v, count) \
    if ((count) == LANES) __builtin_memcpy((p), &(v), sizeof(v)); else __builtin_memcpy((p), &(v), (count) * sizeof *(p))

/* tanh of `count` ≤ LANES bf16 numbers at x, in place, rounded to nearest even. */
static inline void tanh_block_bf16(uint16_t *x, int64_t count) {
    v16u16 half = {0};
    LOAD_BLOCK(half, x, count);
    v16i t = (v16i)tanh16((v16)(__builtin_convertvector(half, v16i) << 16));
    t = (t + 0x7FFF + ((t >> 16) & 1)) >> 16; /* tanh is within ±1: no sign or overflow trouble */
    half = __builtin_convertvector(t & 0xFFFF, v16u16);
    STORE_BLOCK(x, half, count);
}

/* tanh of `count` ≤ LANES floats at x, in place. */
static inline void tanh_block_f32(float *x, int64_t count) {
    v16 v = splat(0.0f);
    LOAD_BLOCK(v, x, count);
    v = tanh16(v);
    STORE_BLOCK(x, v, count);
}

/* x[i] = tanh(x[i]) for the n numbers of x, LANES at a time, the blocks shared among threads. */
#define TANH_IN_BLOCKS(block, x, n)                              \
    _Pragma("omp parallel for schedule(static)")                 \
    for (int64_t k = 0; k < (n); k += LANES) block((x) + k, (n) - k < LANES ? (n) - k : LANES)

void tanh_bf16(uint16_t *x, int64_t n) { TANH_IN_BLOCKS(tanh_block_bf16, x, n); }

void tanh_f32(float *x, int64_t n) { TANH_IN_BLOCKS(tanh_block_f32, x, n); }
