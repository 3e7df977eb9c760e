// reduce_sum_kernel: block b sums row b of a rows x cols matrix: each thread sums a strided slice of
// the row, then a tree in shared memory halves the partial sums until one is left, which thread 0
// stores and adds to the grand total. Any block size works, powers of two or not.

#include "kernel.h"

#include "params.h"
#include "shared_memory.h"

namespace {

__device__ __forceinline__ unsigned next_power_of_two(unsigned n) {
    unsigned p = 1;
    while (p < n) p *= 2;
    return p;
}

}  // namespace

extern "C" __global__ void reduce_sum_kernel(const ReduceSumParams p) {
    float* partial = dynamic_shared<float>();  // [blockDim.x]
    const float* row = p.input + static_cast<size_t>(blockIdx.x) * p.cols;

    float sum = 0.0f;
    for (unsigned c = threadIdx.x; c < p.cols; c += blockDim.x) sum += row[c];
    partial[threadIdx.x] = sum;
    __syncthreads();

    // Partners past the end of the block are skipped, so the tree works over the next power of two.
    for (unsigned stride = next_power_of_two(blockDim.x) / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride && threadIdx.x + stride < blockDim.x) {
            partial[threadIdx.x] += partial[threadIdx.x + stride];
        }
        __syncthreads();
    }

    if (threadIdx.x == 0) {
        p.row_sums[blockIdx.x] = partial[0];
        atomicAdd(p.total, partial[0]);
    }
}
LONGLORA_EMU_ENTRY(reduce_sum_kernel, ReduceSumParams)
