// Packed GEMM kernels: one C source, three instruction-set variants (scalar, AVX2+FMA,
// AVX-512), selected at run time.
//
// The arithmetic contract that makes every variant give the same bits: each output element
// C[i, j] is a single chain  c = fma(A[i, k], W[j, k], c)  for k = 0, 1, …, K−1, started from 0
// or from C[i, j]. A vector lane holds one column j, so a 16-lane zmm, an 8-lane ymm and the
// scalar loop run the same chain; blocking over k stores the running value to C and loads it
// back (exact), so it only changes when the chain pauses, never its operations. Widening BF16 and
// F16 to float is exact. Nothing else touches the value: no horizontal sums, no reassociation,
// no dot-product instructions (AVX-512-BF16's vdpbf16ps pairs products and would change the
// bits). The compiler may not contract or reorder explicit fma calls.
//
// Layout: W (N×K, the nn.Linear layout) is packed once at load into panels of 16 columns, four
// panels to a group; a group stores, for each k, its 4×16 elements contiguously (the last group
// may hold fewer panels), so a micro-kernel reads W as one stream of vector loads and broadcasts
// A. Register tiles: AVX-512 6 rows × 4 panels (24 zmm accumulators of 32), AVX2 6 rows
// × 1 panel (12 ymm of 16). Cache blocking: a block of rows of A and a block of panels stay in L2
// while the micro-kernels run over them, and K is split so a micro-panel of W stays in L1.

#include "assay_kernels.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define ASSAY_X86 1
#endif

size_t assay_dtype_size(int dtype) {
    switch (dtype) {
    case ASSAY_DTYPE_F32: return 4;
    case ASSAY_DTYPE_BF16: return 2;
    case ASSAY_DTYPE_F16: return 2;
    default: return 0;
    }
}

// ---------------------------------------------------------------------------------------------
// CPU detection

#if ASSAY_X86
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

int assay_isa_detect(void) {
#if ASSAY_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return ASSAY_ISA_SCALAR;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!(fma && osxsave && avx && f16c)) return ASSAY_ISA_SCALAR;
    const uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return ASSAY_ISA_SCALAR;  // the OS saves xmm and ymm state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return ASSAY_ISA_SCALAR;
    const int avx2 = (b >> 5) & 1;
    const int avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    if (avx512f && avx512bw && avx512vl && (xcr0 & 0xe6) == 0xe6) return ASSAY_ISA_AVX512;  // opmask, zmm state
    if (avx2) return ASSAY_ISA_AVX2;
#endif
    return ASSAY_ISA_SCALAR;
}

// ---------------------------------------------------------------------------------------------
// Widening (exact)

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else {  // subnormal: normalise
        exp = 113;
        while (!(man & 0x400)) { man <<= 1; exp--; }
        u = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float load_scalar(const void *p, int dtype, long i) {
    switch (dtype) {
    case ASSAY_DTYPE_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
    case ASSAY_DTYPE_F16: return f16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

// ---------------------------------------------------------------------------------------------
// Packing

// Element offset of W[j][kk] in the packed layout (see the top of this file).
static inline size_t packed_offset(long j, long kk, long k, long panels) {
    const long p = j / ASSAY_PANEL, g = p / ASSAY_GROUP, q = p % ASSAY_GROUP;
    const long npg = panels - g * ASSAY_GROUP < ASSAY_GROUP ? panels - g * ASSAY_GROUP : ASSAY_GROUP;
    return (size_t)g * ASSAY_GROUP * ASSAY_PANEL * k + ((size_t)kk * npg + q) * ASSAY_PANEL + (size_t)(j % ASSAY_PANEL);
}

void assay_pack(const void *w, int dtype, long n, long k, long row_stride, long col_stride, void *out, long n_total,
                long first_row) {
    const size_t es = assay_dtype_size(dtype);
    const long panels = (n_total + ASSAY_PANEL - 1) / ASSAY_PANEL, gcols = ASSAY_GROUP * ASSAY_PANEL;
    const char *src = (const char *)w;
    // Destination order, group by group: each group's rows for one k are contiguous, so the
    // writes stream and the reads run along at most 64 source rows at once. The source may be a
    // checkpoint's bytes at any alignment: read through memcpy.
    for (long g = first_row / gcols; g * gcols < first_row + n; g++) {
        const long npg = panels - g * ASSAY_GROUP < ASSAY_GROUP ? panels - g * ASSAY_GROUP : ASSAY_GROUP;
        const long j0 = g * gcols > first_row ? g * gcols : first_row;
        const long j1 = (g + 1) * gcols < first_row + n ? (g + 1) * gcols : first_row + n;
        char *group = (char *)out + (size_t)g * gcols * k * es;
        for (long kk = 0; kk < k; kk++) {
            char *row = group + ((size_t)kk * npg * ASSAY_PANEL + (size_t)(j0 - g * gcols)) * es;
            const char *from = src + ((size_t)(j0 - first_row) * row_stride + (size_t)kk * col_stride) * es;
            const size_t step = (size_t)row_stride * es;
            if (es == 4) {
                for (long j = j0; j < j1; j++, row += 4, from += step) memcpy(row, from, 4);
            } else {
                for (long j = j0; j < j1; j++, row += 2, from += step) memcpy(row, from, 2);
            }
        }
    }
}

void assay_packed_row(const void *packed, int dtype, long n_total, long k, long row, float *out) {
    const long panels = (n_total + ASSAY_PANEL - 1) / ASSAY_PANEL;
    for (long kk = 0; kk < k; kk++) out[kk] = load_scalar(packed, dtype, (long)packed_offset(row, kk, k, panels));
}

// Widens `count` packed elements to float (a block of whole groups keeps its layout), for
// large-M products of BF16/F16 weights: the widening then happens once per block instead of
// once per row tile.
static void widen_block(const char *src, int dtype, long count, float *dst) {
    for (long i = 0; i < count; i++) dst[i] = load_scalar(src, dtype, i);
}

// ---------------------------------------------------------------------------------------------
// Scalar variant

static void gemm_scalar(long m, long n, long k, const float *ap, const char *packed, int dtype,
                        float *c, long ldc, int accumulate, long p0, long p1) {
    const long panels = (n + ASSAY_PANEL - 1) / ASSAY_PANEL;
    for (long p = p0; p < p1; p++) {
        const long g = p / ASSAY_GROUP, q = p % ASSAY_GROUP;
        const long npg = panels - g * ASSAY_GROUP < ASSAY_GROUP ? panels - g * ASSAY_GROUP : ASSAY_GROUP;
        const long base = g * ASSAY_GROUP * ASSAY_PANEL * k + q * ASSAY_PANEL, rs = npg * ASSAY_PANEL;
        for (long jj = 0; jj < ASSAY_PANEL && p * ASSAY_PANEL + jj < n; jj++) {
            const long j = p * ASSAY_PANEL + jj;
            for (long i = 0; i < m; i++) {
                float acc = accumulate ? c[i * ldc + j] : 0.0f;
                const float *ai = ap + (i / ASSAY_MR) * ASSAY_MR * k + i % ASSAY_MR;
                for (long kk = 0; kk < k; kk++) acc = fmaf(ai[kk * ASSAY_MR], load_scalar(packed, dtype, base + kk * rs + jj), acc);
                c[i * ldc + j] = acc;
            }
        }
    }
}

#if ASSAY_X86

// Blocking shared by the vector variants (any values give the same bits: the chain per element
// is unchanged). The loop nest is  panels (jc) > rows (ic) > k (pc) > panel groups (jr) > row
// tiles (ir):  a block of W (NC panels × all of K, ≤ 512 KiB as F32) and a block of C (MC rows ×
// NC panels) stay in L2 while k advances; one micro-panel of W (4 panels × KC) stays in L1 while
// the row tiles of A run over it.
#ifndef MC
#define MC 192
#endif
#ifndef KC
#define KC 128
#endif
#define MRS ASSAY_MR

// Per-thread scratch, grown on demand and kept (Dispatch's worker threads live for the process),
// so a single-row product does not map and fault fresh pages on every call.
static _Thread_local float *scratch_w;
static _Thread_local size_t scratch_w_cap;

static float *scratch(float **buf, size_t *cap, size_t floats) {
    if (*cap < floats) {
        free(*buf);
        *buf = (float *)aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
        if (!*buf) abort();
        *cap = floats;
    }
    return *buf;
}

// ---------------------------------------------------------------------------------------------
// AVX-512 variant

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

T512 static inline __m512 ld512(const char *p, int dtype) {
    switch (dtype) {
    case ASSAY_DTYPE_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
    case ASSAY_DTYPE_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    default: return _mm512_loadu_ps((const float *)p);
    }
}

// C tile (MR rows × NP panels of one group) over kc steps. `bp` points at the group's row for the
// first k of this block; rows are `rs` bytes apart, panels 16 elements apart within a row. `a` is
// a packed A tile. `cols` valid columns in the last panel (16 when full); `load` starts from C.
T512 static inline __attribute__((always_inline)) void
mk512(const int MR, const int NP, const int dtype, long kc, const float *a, const char *bp, long rs,
      float *c, long ldc, int load, long cols) {
    const size_t es = dtype == ASSAY_DTYPE_F32 ? 4 : 2;
    __m512 acc[6][4];
    const __mmask16 last = (__mmask16)((1u << cols) - 1u);
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < NP; q++) {
            const __mmask16 mk = q == NP - 1 ? last : (__mmask16)0xffff;
            acc[r][q] = load ? _mm512_maskz_loadu_ps(mk, c + r * ldc + q * ASSAY_PANEL) : _mm512_setzero_ps();
        }
    for (long kk = 0; kk < kc; kk++) {
        __m512 b[4];
        for (int q = 0; q < NP; q++) b[q] = ld512(bp + (size_t)kk * rs + (size_t)q * ASSAY_PANEL * es, dtype);
        for (int r = 0; r < MR; r++) {
            const __m512 x = _mm512_set1_ps(a[kk * MRS + r]);
            for (int q = 0; q < NP; q++) acc[r][q] = _mm512_fmadd_ps(x, b[q], acc[r][q]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < NP; q++) {
            const __mmask16 mk = q == NP - 1 ? last : (__mmask16)0xffff;
            _mm512_mask_storeu_ps(c + r * ldc + q * ASSAY_PANEL, mk, acc[r][q]);
        }
}

#define MK512_NP(MR, DT)                                                                                   \
    switch (np) {                                                                                          \
    case 1: mk512(MR, 1, DT, kc, a, bp, rs, c, ldc, load, cols); break;                         \
    case 2: mk512(MR, 2, DT, kc, a, bp, rs, c, ldc, load, cols); break;                         \
    case 3: mk512(MR, 3, DT, kc, a, bp, rs, c, ldc, load, cols); break;                         \
    default: mk512(MR, 4, DT, kc, a, bp, rs, c, ldc, load, cols); break;                        \
    }
#define MK512_MR(DT)                                                                                       \
    switch (mr) {                                                                                          \
    case 1: MK512_NP(1, DT) break;                                                                         \
    case 2: MK512_NP(2, DT) break;                                                                         \
    case 3: MK512_NP(3, DT) break;                                                                         \
    case 4: MK512_NP(4, DT) break;                                                                         \
    case 5: MK512_NP(5, DT) break;                                                                         \
    default: MK512_NP(6, DT) break;                                                                        \
    }

T512 static void tile512(int mr, int np, int dtype, long kc, const float *a, const char *bp, long rs,
                         float *c, long ldc, int load, long cols) {
    switch (dtype) {
    case ASSAY_DTYPE_BF16: MK512_MR(ASSAY_DTYPE_BF16) break;
    case ASSAY_DTYPE_F16: MK512_MR(ASSAY_DTYPE_F16) break;
    default: MK512_MR(ASSAY_DTYPE_F32) break;
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2 variant: a panel is two ymm.

#define T256 __attribute__((target("avx2,fma,f16c")))

T256 static inline __m256 ld256(const char *p, int dtype) {
    switch (dtype) {
    case ASSAY_DTYPE_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    case ASSAY_DTYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    default: return _mm256_loadu_ps((const float *)p);
    }
}

T256 static inline __attribute__((always_inline)) void
mk256(const int MR, const int dtype, long kc, const float *a, const char *bp, long rs, float *c, long ldc, int load,
      long cols) {
    const size_t es = dtype == ASSAY_DTYPE_F32 ? 4 : 2;
    __m256 acc[6][2];
    float tmp[6][16];
    const int full = cols == ASSAY_PANEL;
    for (int r = 0; r < MR; r++) {
        if (!load) { acc[r][0] = acc[r][1] = _mm256_setzero_ps(); continue; }
        const float *src = c + r * ldc;
        if (!full) {
            memset(tmp[r], 0, sizeof tmp[r]);
            memcpy(tmp[r], src, (size_t)cols * 4);
            src = tmp[r];
        }
        acc[r][0] = _mm256_loadu_ps(src);
        acc[r][1] = _mm256_loadu_ps(src + 8);
    }
    for (long kk = 0; kk < kc; kk++) {
        const char *row = bp + (size_t)kk * rs;
        const __m256 b0 = ld256(row, dtype), b1 = ld256(row + 8 * es, dtype);
        for (int r = 0; r < MR; r++) {
            const __m256 x = _mm256_broadcast_ss(a + kk * MRS + r);
            acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < MR; r++) {
        if (full) {
            _mm256_storeu_ps(c + r * ldc, acc[r][0]);
            _mm256_storeu_ps(c + r * ldc + 8, acc[r][1]);
        } else {
            _mm256_storeu_ps(tmp[r], acc[r][0]);
            _mm256_storeu_ps(tmp[r] + 8, acc[r][1]);
            memcpy(c + r * ldc, tmp[r], (size_t)cols * 4);
        }
    }
}

#define MK256_MR(DT)                                                                                       \
    switch (mr) {                                                                                          \
    case 1: mk256(1, DT, kc, a, bp, rs, c, ldc, load, cols); break;                                       \
    case 2: mk256(2, DT, kc, a, bp, rs, c, ldc, load, cols); break;                                       \
    case 3: mk256(3, DT, kc, a, bp, rs, c, ldc, load, cols); break;                                       \
    case 4: mk256(4, DT, kc, a, bp, rs, c, ldc, load, cols); break;                                       \
    case 5: mk256(5, DT, kc, a, bp, rs, c, ldc, load, cols); break;                                       \
    default: mk256(6, DT, kc, a, bp, rs, c, ldc, load, cols); break;                                      \
    }

T256 static void panel256(int mr, int dtype, long kc, const float *a, const char *bp, long rs, float *c, long ldc,
                          int load, long cols) {
    switch (dtype) {
    case ASSAY_DTYPE_BF16: MK256_MR(ASSAY_DTYPE_BF16) break;
    case ASSAY_DTYPE_F16: MK256_MR(ASSAY_DTYPE_F16) break;
    default: MK256_MR(ASSAY_DTYPE_F32) break;
    }
}

// A single row across a whole group (up to 8 ymm accumulators): decoding one token, where one
// panel at a time would leave two FMA chains in flight and stall on their latency.
T256 static inline __attribute__((always_inline)) void
row256(const int NP, const int dtype, long kc, const float *a, const char *bp, long rs, float *c, int load, long cols) {
    const size_t es = dtype == ASSAY_DTYPE_F32 ? 4 : 2;
    __m256 acc[4][2];
    float tmp[16];
    for (int q = 0; q < NP; q++) {
        const float *src = c + q * ASSAY_PANEL;
        if (!load) { acc[q][0] = acc[q][1] = _mm256_setzero_ps(); continue; }
        if (q == NP - 1 && cols != ASSAY_PANEL) {
            memset(tmp, 0, sizeof tmp);
            memcpy(tmp, src, (size_t)cols * 4);
            src = tmp;
        }
        acc[q][0] = _mm256_loadu_ps(src);
        acc[q][1] = _mm256_loadu_ps(src + 8);
    }
    for (long kk = 0; kk < kc; kk++) {
        const char *row = bp + (size_t)kk * rs;
        const __m256 x = _mm256_broadcast_ss(a + kk * MRS);
        for (int q = 0; q < NP; q++) {
            acc[q][0] = _mm256_fmadd_ps(x, ld256(row + (size_t)q * ASSAY_PANEL * es, dtype), acc[q][0]);
            acc[q][1] = _mm256_fmadd_ps(x, ld256(row + ((size_t)q * ASSAY_PANEL + 8) * es, dtype), acc[q][1]);
        }
    }
    for (int q = 0; q < NP; q++) {
        if (q == NP - 1 && cols != ASSAY_PANEL) {
            _mm256_storeu_ps(tmp, acc[q][0]);
            _mm256_storeu_ps(tmp + 8, acc[q][1]);
            memcpy(c + q * ASSAY_PANEL, tmp, (size_t)cols * 4);
        } else {
            _mm256_storeu_ps(c + q * ASSAY_PANEL, acc[q][0]);
            _mm256_storeu_ps(c + q * ASSAY_PANEL + 8, acc[q][1]);
        }
    }
}

#define ROW256_NP(DT)                                                                                      \
    switch (np) {                                                                                          \
    case 1: row256(1, DT, kc, a, bp, rs, c, load, cols); break;                                            \
    case 2: row256(2, DT, kc, a, bp, rs, c, load, cols); break;                                            \
    case 3: row256(3, DT, kc, a, bp, rs, c, load, cols); break;                                            \
    default: row256(4, DT, kc, a, bp, rs, c, load, cols); break;                                           \
    }

// One panel per micro-kernel call (12 ymm accumulators); the group's `np` panels in turn.
T256 static void tile256(int mr, int np, int dtype, long kc, const float *a, const char *bp, long rs,
                         float *c, long ldc, int load, long cols) {
    const size_t es = dtype == ASSAY_DTYPE_F32 ? 4 : 2;
    if (mr == 1) {
        switch (dtype) {
        case ASSAY_DTYPE_BF16: ROW256_NP(ASSAY_DTYPE_BF16) break;
        case ASSAY_DTYPE_F16: ROW256_NP(ASSAY_DTYPE_F16) break;
        default: ROW256_NP(ASSAY_DTYPE_F32) break;
        }
        return;
    }
    for (int q = 0; q < np; q++)
        panel256(mr, dtype, kc, a, bp + (size_t)q * ASSAY_PANEL * es, rs, c + q * ASSAY_PANEL, ldc, load,
                 q == np - 1 ? cols : ASSAY_PANEL);
}

// ---------------------------------------------------------------------------------------------
// The blocked driver shared by the vector variants.

typedef void (*tile_fn)(int mr, int np, int dtype, long kc, const float *a, const char *bp, long rs,
                        float *c, long ldc, int load, long cols);

// p0 is a multiple of ASSAY_GROUP; p1 is too, or the last panel.
static void gemm_blocked(tile_fn tile, long m, long n, long k, const float *ap, const char *packed, int dtype,
                         float *c, long ldc, int accumulate, long p0, long p1) {
    const size_t es = assay_dtype_size(dtype);
    const size_t gelems = (size_t)ASSAY_GROUP * ASSAY_PANEL * k;  // elements of a full group
    long nc = (512 * 1024) / (ASSAY_PANEL * k * 4) / ASSAY_GROUP * ASSAY_GROUP;  // panels per W block
    if (nc < ASSAY_GROUP) nc = ASSAY_GROUP;
    if (nc > 32) nc = 32;
    const int widen = dtype != ASSAY_DTYPE_F32 && m >= 4 * MRS;
    // A single row tile (decode) streams each group of W once, front to back: no k blocking.
    const long kcmax = m <= MRS ? k : KC;
    float *wide = widen ? scratch(&scratch_w, &scratch_w_cap, (size_t)nc * ASSAY_PANEL * k) : NULL;
    for (long jc = p0; jc < p1; jc += nc) {
        const long jn = p1 - jc < nc ? p1 - jc : nc;
        const char *block = packed + (size_t)(jc / ASSAY_GROUP) * gelems * es;
        size_t bes = es;
        int dt = dtype;
        if (widen) {
            widen_block(block, dtype, jn * ASSAY_PANEL * k, wide);
            block = (const char *)wide;
            bes = sizeof(float);
            dt = ASSAY_DTYPE_F32;
        }
        for (long ic = 0; ic < m; ic += MC) {
            const long mcn = m - ic < MC ? m - ic : MC;
            for (long pc = 0; pc < k; pc += kcmax) {
                const long kc = k - pc < kcmax ? k - pc : kcmax;
                const int load = accumulate || pc > 0;
                for (long jr = 0; jr < jn; jr += ASSAY_GROUP) {
                    const long np = jn - jr < ASSAY_GROUP ? jn - jr : ASSAY_GROUP;
                    const long rs = np * ASSAY_PANEL * (long)bes;
                    const char *g = block + (size_t)(jr / ASSAY_GROUP) * gelems * bes + (size_t)pc * rs;
                    const long colEnd = (jc + jr + np) * ASSAY_PANEL;
                    const long cols = colEnd > n ? ASSAY_PANEL - (colEnd - n) : ASSAY_PANEL;
                    // The next group's micro-panel, pulled towards L2/L1 a slice per row tile.
                    const char *next = jr + ASSAY_GROUP < jn ? g + gelems * bes : NULL;
                    const long lines = kc * ASSAY_GROUP * ASSAY_PANEL * (long)bes / 64, tiles = (mcn + MRS - 1) / MRS;
                    const long per = (lines + tiles - 1) / tiles;
                    for (long ir = 0, ti = 0; ir < mcn; ir += MRS, ti++) {
                        const long mr = mcn - ir < MRS ? mcn - ir : MRS;
                        if (next)
                            for (long l = ti * per; l < (ti + 1) * per && l < lines; l++) __builtin_prefetch(next + l * 64, 0, 2);
                        tile((int)mr, (int)np, dt, kc, ap + (size_t)(ic + ir) * k + (size_t)pc * MRS, g, rs,
                             c + (ic + ir) * ldc + (jc + jr) * ASSAY_PANEL, ldc, load, cols);
                    }
                }
            }
        }
    }
}

#endif  // ASSAY_X86

size_t assay_packed_a_floats(long m, long k) { return (size_t)((m + ASSAY_MR - 1) / ASSAY_MR) * ASSAY_MR * (size_t)k; }

void assay_pack_a(long m, long k, const float *a, long lda, float *out) {
    for (long t = 0; t < m; t += ASSAY_MR) {
        float *dst = out + (size_t)t * k;
        const long mr = m - t < ASSAY_MR ? m - t : ASSAY_MR;
        for (long kk = 0; kk < k; kk++) {
            for (long r = 0; r < mr; r++) dst[kk * ASSAY_MR + r] = a[(t + r) * lda + kk];
            for (long r = mr; r < ASSAY_MR; r++) dst[kk * ASSAY_MR + r] = 0.0f;
        }
    }
}

void assay_gemm_packed(int isa, long m, long n, long k, const float *ap, const void *packed, int dtype,
                       float *c, long ldc, int accumulate, long p0, long p1) {
    if (m <= 0 || p1 <= p0) return;
    if (k == 0) {
        if (!accumulate)
            for (long i = 0; i < m; i++)
                for (long j = p0 * ASSAY_PANEL; j < p1 * ASSAY_PANEL && j < n; j++) c[i * ldc + j] = 0;
        return;
    }
#if ASSAY_X86
    if (isa >= ASSAY_ISA_AVX512) {
        gemm_blocked(tile512, m, n, k, ap, (const char *)packed, dtype, c, ldc, accumulate, p0, p1);
        return;
    }
    if (isa == ASSAY_ISA_AVX2) {
        gemm_blocked(tile256, m, n, k, ap, (const char *)packed, dtype, c, ldc, accumulate, p0, p1);
        return;
    }
#endif
    gemm_scalar(m, n, k, ap, (const char *)packed, dtype, c, ldc, accumulate, p0, p1);
}

// ---------------------------------------------------------------------------------------------
// Read bandwidth probe

#if ASSAY_X86
T512 static float stream512(const float *p, long count) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    long i = 0;
    for (; i + 64 <= count; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p + i));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + i + 48));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < count; i++) s += p[i];
    return s;
}

T256 static float stream256(const float *p, long count) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    long i = 0;
    for (; i + 32 <= count; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    float s = 0;
    for (int j = 0; j < 8; j++) s += t[j];
    for (; i < count; i++) s += p[i];
    return s;
}
#endif

float assay_stream_read(const float *p, long count) {
#if ASSAY_X86
    const int isa = assay_isa_detect();
    if (isa >= ASSAY_ISA_AVX512) return stream512(p, count);
    if (isa == ASSAY_ISA_AVX2) return stream256(p, count);
#endif
    float s = 0;
    for (long i = 0; i < count; i++) s += p[i];
    return s;
}

// ---------------------------------------------------------------------------------------------
// Fork-join pool
//
// At most one worker per other online CPU, numbered 1…W. A region is posted under a sequence
// lock: `seq` is odd while the job is written and even once it is complete, and a worker reads
// the job between two equal even values of `seq`. The caller runs part 0 and worker w part w (a
// part of its own, so a region as large as the machine is split evenly even when a worker wakes
// late); parts past W are taken from `next`, which holds the region's number in its high bits so
// that a worker holding a stale job cannot take a part of a later region. The caller returns once
// `done` counts every part, so a worker with a part of its own cannot miss its region. Workers spin for
// ~200 µs after a region, then sleep on a condition variable; `sleeping` and `seq` are
// sequentially consistent, so a poster either sees a sleeper (and wakes it) or the sleeper sees
// the new `seq`.

#define POOL_MAX 64
#define POOL_SPIN_NS 200000L

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_flag busy;
    _Atomic unsigned long seq;
    _Atomic(assay_part_fn) fn;
    _Atomic(void *) ctx;
    _Atomic long parts;
    _Atomic unsigned long next;  // (region << 16) | next part
    _Atomic long done;
    _Atomic int sleeping;
    int workers, cpus;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, ATOMIC_FLAG_INIT};

static inline void cpu_relax(void) {
#if ASSAY_X86
    _mm_pause();
#endif
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

// Takes and runs parts of region `region` until none is left.
static void run_parts(unsigned long region, assay_part_fn fn, void *ctx, long parts) {
    for (;;) {
        unsigned long v = atomic_load(&pool.next);
        if ((v >> 16) != region || (long)(v & 0xffff) >= parts) return;
        if (!atomic_compare_exchange_weak(&pool.next, &v, v + 1)) continue;
        fn(ctx, (long)(v & 0xffff));
        atomic_fetch_add(&pool.done, 1);
    }
}

static void *pool_worker(void *arg) {
    const long me = (long)(intptr_t)arg;
    unsigned long seen = 0;
    for (;;) {
        unsigned long s = atomic_load(&pool.seq);
        long spins = 0, since = 0;
        while (s == seen || (s & 1)) {
            cpu_relax();
            if ((++spins & 255) == 0) {
                const long t = now_ns();
                if (since == 0) since = t;
                if (t - since > POOL_SPIN_NS) {
                    pthread_mutex_lock(&pool.lock);
                    atomic_fetch_add(&pool.sleeping, 1);
                    while ((s = atomic_load(&pool.seq)) == seen || (s & 1)) pthread_cond_wait(&pool.wake, &pool.lock);
                    atomic_fetch_sub(&pool.sleeping, 1);
                    pthread_mutex_unlock(&pool.lock);
                    spins = 0, since = 0;
                    continue;
                }
            }
            s = atomic_load(&pool.seq);
        }
        const assay_part_fn fn = atomic_load_explicit(&pool.fn, memory_order_relaxed);
        void *const ctx = atomic_load_explicit(&pool.ctx, memory_order_relaxed);
        const long parts = atomic_load_explicit(&pool.parts, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load(&pool.seq) != s) continue;  // the job changed while it was read
        seen = s;
        if (me < parts) {
            fn(ctx, me);
            atomic_fetch_add(&pool.done, 1);
        }
        run_parts(s / 2, fn, ctx, parts);
    }
    return NULL;
}

// Starts the workers on first use: one per other online CPU (none on one CPU). After that, one
// atomic load: no lock on a region's way in.
static _Atomic int pool_ready = -1;

static int pool_start(void) {
    const int ready = atomic_load_explicit(&pool_ready, memory_order_acquire);
    if (ready >= 0) return ready;
    pthread_mutex_lock(&pool.lock);
    if (pool.cpus == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        pool.cpus = n < 1 ? 1 : n > POOL_MAX ? POOL_MAX : (int)n;
        while (pool.workers < pool.cpus - 1) {
            pthread_t t;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            const int failed = pthread_create(&t, &attr, pool_worker, (void *)(intptr_t)(pool.workers + 1));
            pthread_attr_destroy(&attr);
            if (failed) break;
            pool.workers++;
        }
    }
    const int workers = pool.workers;
    atomic_store_explicit(&pool_ready, workers, memory_order_release);
    pthread_mutex_unlock(&pool.lock);
    return workers;
}

void assay_parallel(long parts, assay_part_fn fn, void *ctx) {
    if (parts > 0xffff) parts = 0xffff;
    if (parts <= 1 || atomic_flag_test_and_set(&pool.busy)) {
        for (long p = 0; p < parts; p++) fn(ctx, p);
        return;
    }
    if (pool_start() == 0) {  // one CPU, or no threads to be had: the parts in turn
        atomic_flag_clear(&pool.busy);
        for (long p = 0; p < parts; p++) fn(ctx, p);
        return;
    }
    const unsigned long s = atomic_load(&pool.seq), region = (s + 2) / 2;
    atomic_store(&pool.seq, s + 1);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&pool.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&pool.ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&pool.parts, parts, memory_order_relaxed);
    atomic_store(&pool.done, 0);
    atomic_store(&pool.next, region << 16 | (unsigned long)(pool.workers + 1));
    atomic_store(&pool.seq, s + 2);
    if (atomic_load(&pool.sleeping) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    fn(ctx, 0);
    atomic_fetch_add(&pool.done, 1);
    run_parts(region, fn, ctx, parts);
    // A worker still running a part may be waiting for a core this thread holds (a shared
    // machine): past a short spin, give it up between checks.
    for (long spins = 0; atomic_load(&pool.done) < parts; spins++) {
        if (spins < 4096) cpu_relax(); else sched_yield();
    }
    atomic_flag_clear(&pool.busy);
}
