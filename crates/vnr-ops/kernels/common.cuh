// Shared helpers of vnr-ops' kernels. Every kernel walks its work items with a grid-stride
// loop, so any launch size covers any problem size; indices are 64-bit.
#pragma once
#include <stddef.h>

#define VNR_GRID_STRIDE(idx, n)                                                              \
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < (n);              \
         idx += (size_t)blockDim.x * gridDim.x)
