// Assay's own GEMM kernels, compiled for several x86-64 instruction sets in one binary and chosen
// at run time (CPUID), the way ggml builds its CPU back ends. TensorCore's `PackedMatrix` and
// `ISA` are the Swift side; the arithmetic contract is stated there and in kernels.c.
#ifndef ASSAY_KERNELS_H
#define ASSAY_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/// Instruction-set variants, lowest first.
enum {
    ASSAY_ISA_SCALAR = 0,  // portable C, fmaf()
    ASSAY_ISA_AVX2 = 1,    // AVX2 + FMA + F16C
    ASSAY_ISA_AVX512 = 2,  // AVX-512 F/BW/VL (+ FMA, F16C)
};

/// Element types of packed panels (as stored in the checkpoint; widened in registers).
enum {
    ASSAY_DTYPE_F32 = 0,
    ASSAY_DTYPE_BF16 = 1,
    ASSAY_DTYPE_F16 = 2,
};

/// Columns per packed panel (one zmm, two ymm), and panels per group (see kernels.c's layout).
#define ASSAY_PANEL 16
#define ASSAY_GROUP 4
/// Rows per packed tile of A.
#define ASSAY_MR 6

/// The best variant this CPU and OS support (CPUID leaves 1 and 7, XGETBV for the register state).
int assay_isa_detect(void);

/// Bytes per element of a dtype (4, 2, 2), or 0 for an unknown one.
size_t assay_dtype_size(int dtype);

/// Packs the n rows of a matrix W (element (r, kk) at `w + (r·row_stride + kk·col_stride)`
/// elements, type `dtype`) as rows first_row ..< first_row + n of a packed (n_total, k) matrix at
/// `out`, which holds assay_packed_elements(n_total, k) elements and must be zeroed beforehand
/// (the columns past n_total stay zero). Layout: kernels.c.
void assay_pack(const void *w, int dtype, long n, long k, long row_stride, long col_stride, void *out, long n_total,
                long first_row);

/// Floats `assay_pack_a` writes for an (m, k) A: m rounded up to ASSAY_MR rows.
size_t assay_packed_a_floats(long m, long k);

/// Packs A (m×k, rows `lda` apart) once per product into ASSAY_MR-row tiles, k-major: element
/// (i, kk) at out[(i / MR)·MR·k + kk·MR + i % MR]; rows past m are zero.
void assay_pack_a(long m, long k, const float *a, long lda, float *out);

/// C[i, j] (+)= Σ_k A[i, k]·W[j, k] for i < m and j in panels [p0, p1) (j < n), with A packed by
/// `assay_pack_a` and W an (n, k) matrix packed by `assay_pack`; p0 is a multiple of
/// ASSAY_GROUP, and so is p1 unless it is the last panel. Every C[i, j] is one fused
/// multiply-add chain over k in increasing order, starting from C[i, j] when `accumulate` is set
/// and from 0 otherwise, so its bits do not depend on the variant, m, the row's position, the
/// panel range or the blocking.
void assay_gemm_packed(int isa, long m, long n, long k, const float *a_packed, const void *packed, int dtype,
                       float *c, long ldc, int accumulate, long p0, long p1);

/// out[j] = W[row][j] widened to float for j < k: one row of the packed matrix (embedding lookups
/// through a tied head).
void assay_packed_row(const void *packed, int dtype, long n_total, long k, long row, float *out);

/// Reads `count` floats once, front to back, with the widest loads the CPU has (the read
/// bandwidth probe of `assay bench kernels`); returns their sum so the reads are not elided.
float assay_stream_read(const float *p, long count);

/// A part of a fork-join region: `fn(ctx, part)`.
typedef void (*assay_part_fn)(void *ctx, long part);

/// Runs fn(ctx, 0 ..< parts) and returns when every part has finished: the caller and a pool of
/// worker threads (one per other online CPU) take parts in turn; the workers spin briefly
/// between regions (so a region of a few microseconds, a decode step's product, does not pay a
/// thread wake-up) and then sleep. One region at a time: a region started while another runs
/// (another thread's, or nested in a part) runs its parts in turn on the caller. At most 65,535
/// parts.
void assay_parallel(long parts, assay_part_fn fn, void *ctx);

#endif
