// probe_kernel: applies every device primitive once (mma bf16 and f16, ldmatrix x1/x2/x4 with and
// without .trans, the four shuffles; cp.async loads the ldmatrix tile) to given inputs and stores each
// lane's raw output registers. Tests compare them with scalar definitions from the PTX ISA, in the
// emulator and on a GPU, whose outputs can also be recorded as golden vectors. One block of one warp.

#include "kernel.h"

#include "cp_async.h"
#include "ldmatrix.h"
#include "mma.h"
#include "params.h"

namespace {

constexpr int kLdmatrixRegisters = 14;

__device__ void probe_mma(const ProbeParams& p, int lane) {
    float c[4], d[4];
    uint32_t a[4], b[2];
    for (int i = 0; i < 4; ++i) c[i] = p.mma_c[lane * 4 + i];

    for (int i = 0; i < 4; ++i) a[i] = p.mma_bf16_a[lane * 4 + i];
    for (int i = 0; i < 2; ++i) b[i] = p.mma_bf16_b[lane * 2 + i];
    mma_m16n8k16_bf16(d, a, b, c);
    for (int i = 0; i < 4; ++i) p.mma_bf16_d[lane * 4 + i] = d[i];

    for (int i = 0; i < 4; ++i) a[i] = p.mma_f16_a[lane * 4 + i];
    for (int i = 0; i < 2; ++i) b[i] = p.mma_f16_b[lane * 2 + i];
    mma_m16n8k16_f16(d, a, b, c);
    for (int i = 0; i < 4; ++i) p.mma_f16_d[lane * 4 + i] = d[i];
}

constexpr unsigned kProbeSharedBytes = 32 * 8 * sizeof(uint16_t);  // 32 rows of 8 elements

__device__ void probe_ldmatrix(const ProbeParams& p, int lane) {
    __shared__ __align__(16) uint16_t tile[kProbeSharedBytes / sizeof(uint16_t)];
    cp_async_16(&tile[lane * 8], &p.ldmatrix_source[lane * 8]);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    const uint16_t* row = &tile[p.ldmatrix_rows[lane] * 8];
    uint32_t r[kLdmatrixRegisters];
    ldmatrix_x1(&r[0], row);
    ldmatrix_x2(&r[1], row);
    ldmatrix_x4(&r[3], row);
    ldmatrix_x1_trans(&r[7], row);
    ldmatrix_x2_trans(&r[8], row);
    ldmatrix_x4_trans(&r[10], row);
    for (int i = 0; i < kLdmatrixRegisters; ++i) p.ldmatrix_out[lane * kLdmatrixRegisters + i] = r[i];
}

__device__ void probe_shuffles(const ProbeParams& p, int lane) {
    const unsigned all = 0xffffffffu;
    const int width = static_cast<int>(p.shuffle_width);
    uint32_t value = p.shuffle_values[lane];
    uint32_t* out = p.shuffle_out + lane * 4;
    out[0] = __shfl_sync(all, value, static_cast<int>(p.shuffle_sources[lane]), width);
    out[1] = __shfl_up_sync(all, value, p.shuffle_delta, width);
    out[2] = __shfl_down_sync(all, value, p.shuffle_delta, width);
    out[3] = __shfl_xor_sync(all, value, static_cast<int>(p.shuffle_xor_mask), width);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(32) probe_kernel(const ProbeParams p) {
    const int lane = static_cast<int>(threadIdx.x);
    probe_mma(p, lane);
    probe_ldmatrix(p, lane);
    probe_shuffles(p, lane);
}
LONGLORA_EMU_ENTRY(probe_kernel, ProbeParams, kProbeSharedBytes)
