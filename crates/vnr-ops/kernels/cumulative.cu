// Cumulative sum / product along the middle axis of an `[outer, len, inner]` buffer, and the
// cumprod gradient without division. Mirrors `src/cumulative.rs` (`scan_kernel`,
// `cumprod_backward_kernel`): one thread per `(outer, inner)` column runs the same sequential
// recurrence, so results match the CPU up to floating-point contraction.
#include "common.cuh"

template <typename T, bool PROD>
__device__ void scan(const T* __restrict__ x, T* __restrict__ out, size_t outer, size_t len,
                     size_t inner, int exclusive, int reverse) {
    VNR_GRID_STRIDE(col, outer * inner) {
        const size_t base = (col / inner) * len * inner + col % inner;
        const T* xr = x + base;
        T* yr = out + base;
        T acc = PROD ? T(1) : T(0);
        for (size_t step = 0; step < len; ++step) {
            const size_t k = reverse ? len - 1 - step : step;
            const T v = xr[k * inner];
            if (exclusive) yr[k * inner] = acc;
            acc = PROD ? acc * v : acc + v;
            if (!exclusive) yr[k * inner] = acc;
        }
    }
}

// With `E_k = prod_{i<k} x_i`:
//   inclusive: dx_k = E_k S_k, S_k = g_k + x_{k+1} S_{k+1}, S_{len-1} = g_{len-1};
//   exclusive: dx_k = E_k T_k, T_k = g_{k+1} + x_{k+1} T_{k+1}, T_{len-1} = 0.
template <typename T>
__device__ void cumprod_backward(const T* __restrict__ x, const T* __restrict__ g,
                                 T* __restrict__ dx, size_t outer, size_t len, size_t inner,
                                 int exclusive) {
    VNR_GRID_STRIDE(col, outer * inner) {
        const size_t base = (col / inner) * len * inner + col % inner;
        const T* xr = x + base;
        const T* gr = g + base;
        T* dr = dx + base;
        T prefix = T(1);
        for (size_t k = 0; k < len; ++k) {
            dr[k * inner] = prefix;
            prefix *= xr[k * inner];
        }
        T s = T(0);
        for (size_t step = 0; step < len; ++step) {
            const size_t k = len - 1 - step;
            const bool has_next = k + 1 < len;
            if (exclusive) {
                s = has_next ? gr[(k + 1) * inner] + xr[(k + 1) * inner] * s : T(0);
            } else {
                s = has_next ? gr[k * inner] + xr[(k + 1) * inner] * s : gr[k * inner];
            }
            dr[k * inner] *= s;
        }
    }
}

#define VNR_CUMULATIVE_ENTRIES(T, SUFFIX)                                                    \
    extern "C" __global__ void cumsum_##SUFFIX(const T* x, T* out, size_t outer, size_t len, \
                                               size_t inner, int exclusive, int reverse) {   \
        scan<T, false>(x, out, outer, len, inner, exclusive, reverse);                       \
    }                                                                                        \
    extern "C" __global__ void cumprod_##SUFFIX(const T* x, T* out, size_t outer,            \
                                                size_t len, size_t inner, int exclusive,     \
                                                int reverse) {                               \
        scan<T, true>(x, out, outer, len, inner, exclusive, reverse);                        \
    }                                                                                        \
    extern "C" __global__ void cumprod_backward_##SUFFIX(                                    \
        const T* x, const T* g, T* dx, size_t outer, size_t len, size_t inner,               \
        int exclusive) {                                                                     \
        cumprod_backward<T>(x, g, dx, outer, len, inner, exclusive);                         \
    }

VNR_CUMULATIVE_ENTRIES(float, f32)
VNR_CUMULATIVE_ENTRIES(double, f64)
