/* The ceiling for the CPU attention's tile products on this machine, single-threaded: the AVX2 FMA
 * peak (12 independent chains of fused multiply-adds) and a 6x16 register-blocked 64x64x64 product
 * with every operand in L1, the AVX2 block shape of src/ops/attention/microgemm.rs; on a CPU with
 * AVX-512 also its peak (16 chains) and the AVX-512 block shape, 4x64, with B and C starting on a
 * cache line and 16 bytes off one (every 64-byte load then touches two lines); on a CPU with
 * AVX-512 BF16, the peak of its bf16 dot product (16 chains of vdpbf16ps, each two bf16 products
 * per f32 lane), the one lower-precision product a CPU without AMX offers. Run it with
 * `bash scripts/cpu-fma-peak.sh`; REPORT.md compares the attention bench's GFLOP/s with it. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double fma_peak(void) {
    __m256 acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps(i * 0.001f);
    const __m256 b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(0.0001f);
    const long iterations = 200000000;
    double start = now();
    for (long i = 0; i < iterations; i++) {
        for (int j = 0; j < 12; j++) acc[j] = _mm256_fmadd_ps(acc[j], b, c);
        /* Keeps the 12 chains in registers and stops the compiler from folding the loop. */
        __asm__ volatile("" ::"x"(acc[0]), "x"(acc[1]), "x"(acc[2]), "x"(acc[3]), "x"(acc[4]),
                         "x"(acc[5]), "x"(acc[6]), "x"(acc[7]), "x"(acc[8]), "x"(acc[9]),
                         "x"(acc[10]), "x"(acc[11]));
    }
    return iterations * 12.0 * 16.0 / (now() - start) / 1e9;
}

/* 16 floats of slack, so that B and C can start 16 bytes past a cache line. */
static float a[64 * 64 + 16] __attribute__((aligned(64))), b[64 * 64 + 16] __attribute__((aligned(64))),
    c[64 * 64 + 16] __attribute__((aligned(64)));

static double block_product(void) {
    for (int i = 0; i < 64 * 64; i++) {
        a[i] = (i % 13) * 1e-4f;
        b[i] = (i % 7) * 1e-4f;
    }
    const int repeats = 200000;
    double start = now();
    for (int r = 0; r < repeats; r++) {
        for (int i = 0; i + 6 <= 60; i += 6) {
            for (int j = 0; j < 64; j += 16) {
                __m256 acc[12];
                for (int q = 0; q < 12; q++) acc[q] = _mm256_setzero_ps();
                for (int k = 0; k < 64; k++) {
                    __m256 b0 = _mm256_loadu_ps(b + k * 64 + j), b1 = _mm256_loadu_ps(b + k * 64 + j + 8);
                    for (int q = 0; q < 6; q++) {
                        __m256 x = _mm256_broadcast_ss(a + (i + q) * 64 + k);
                        acc[2 * q] = _mm256_fmadd_ps(x, b0, acc[2 * q]);
                        acc[2 * q + 1] = _mm256_fmadd_ps(x, b1, acc[2 * q + 1]);
                    }
                }
                for (int q = 0; q < 6; q++) {
                    _mm256_storeu_ps(c + (i + q) * 64 + j, acc[2 * q]);
                    _mm256_storeu_ps(c + (i + q) * 64 + j + 8, acc[2 * q + 1]);
                }
            }
        }
    }
    return repeats * 60.0 * 64 * 64 * 2 / (now() - start) / 1e9;
}

/* Keeps 16 zmm chains in registers and stops the compiler from folding the loop. */
#define KEEP_16_ZMM(acc)                                                                           \
    __asm__ volatile("" ::"v"(acc[0]), "v"(acc[1]), "v"(acc[2]), "v"(acc[3]), "v"(acc[4]),       \
                     "v"(acc[5]), "v"(acc[6]), "v"(acc[7]), "v"(acc[8]), "v"(acc[9]),             \
                     "v"(acc[10]), "v"(acc[11]), "v"(acc[12]), "v"(acc[13]), "v"(acc[14]),        \
                     "v"(acc[15]))

__attribute__((target("avx512f"))) static double fma_peak_avx512(void) {
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps(i * 0.001f);
    const __m512 b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(0.0001f);
    const long iterations = 100000000;
    double start = now();
    for (long i = 0; i < iterations; i++) {
        for (int j = 0; j < 16; j++) acc[j] = _mm512_fmadd_ps(acc[j], b, c);
        KEEP_16_ZMM(acc);
    }
    return iterations * 16.0 * 32.0 / (now() - start) / 1e9;
}

__attribute__((target("avx512f"))) static double block_product_avx512(int offset) {
    const float *bo = b + offset;
    float *co = c + offset;
    const int repeats = 100000;
    double start = now();
    for (int r = 0; r < repeats; r++) {
        for (int i = 0; i < 64; i += 4) {
            __m512 acc[16];
            for (int q = 0; q < 16; q++) acc[q] = _mm512_setzero_ps();
            for (int k = 0; k < 64; k++) {
                __m512 bk[4];
                for (int v = 0; v < 4; v++) bk[v] = _mm512_loadu_ps(bo + k * 64 + 16 * v);
                for (int q = 0; q < 4; q++) {
                    __m512 x = _mm512_set1_ps(a[(i + q) * 64 + k]);
                    for (int v = 0; v < 4; v++) acc[4 * q + v] = _mm512_fmadd_ps(x, bk[v], acc[4 * q + v]);
                }
            }
            for (int q = 0; q < 4; q++)
                for (int v = 0; v < 4; v++) _mm512_storeu_ps(co + (i + q) * 64 + 16 * v, acc[4 * q + v]);
        }
    }
    return repeats * 64.0 * 64 * 64 * 2 / (now() - start) / 1e9;
}

/* Counts 4 FLOPs per f32 lane per instruction: two bf16 products and their two additions. */
__attribute__((target("avx512f,avx512bf16"))) static double bf16_dot_peak_avx512(void) {
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps(i * 0.001f);
    const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80), c = (__m512bh)_mm512_set1_epi16(0x3c00);
    const long iterations = 50000000;
    double start = now();
    for (long i = 0; i < iterations; i++) {
        for (int j = 0; j < 16; j++) acc[j] = _mm512_dpbf16_ps(acc[j], b, c);
        KEEP_16_ZMM(acc);
    }
    return iterations * 16.0 * 64.0 / (now() - start) / 1e9;
}

int main(void) {
    printf("AVX2 FMA peak, one thread: %.1f GFLOP/s\n", fma_peak());
    double rate = block_product();
    printf("6x16 blocks, 60x64x64 product in L1, one thread: %.1f GFLOP/s (checksum %g)\n", rate,
           c[5]);
    if (__builtin_cpu_supports("avx512f")) {
        printf("AVX-512 FMA peak, one thread: %.1f GFLOP/s\n", fma_peak_avx512());
        for (int offset = 0; offset <= 4; offset += 4) {
            rate = block_product_avx512(offset);
            printf("4x64 blocks, 64x64x64 product in L1, B and C %d bytes past a cache line, one "
                   "thread: %.1f GFLOP/s (checksum %g)\n",
                   4 * offset, rate, c[5 + offset]);
        }
    }
    if (__builtin_cpu_supports("avx512bf16"))
        printf("AVX-512 BF16 dot-product peak (vdpbf16ps), one thread: %.1f GFLOP/s\n",
               bf16_dot_peak_avx512());
    return 0;
}
