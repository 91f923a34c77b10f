// 3D max and average pooling over `planes` independent `[D, H, W]` volumes, with PyTorch's
// semantics as `src/pool.rs` implements them: windows clipped to the input, NaN propagating
// in max pooling, the gradient of a max going to the first maximum of its window in
// (kd, kh, kw) order (the last NaN when the maximum is NaN).
#include "common.cuh"

// Same field order as `PoolGeometryArg` in `src/cuda.rs`; per-axis values are [D, H, W].
struct PoolGeometry {
    unsigned long long planes;
    unsigned long long input[3];
    unsigned long long output[3];
    unsigned long long kernel[3];
    unsigned long long stride[3];
    unsigned long long padding[3];
};

// Input range [lo, hi) that window `o` covers along `axis`, clipped to the input.
__device__ inline void pool_window(const PoolGeometry& g, int axis, size_t o, size_t* lo,
                                   size_t* hi) {
    const size_t start = o * g.stride[axis];
    const size_t pad = g.padding[axis];
    *lo = start > pad ? start - pad : 0;
    const size_t end = start + g.kernel[axis];
    const size_t clipped = end > pad ? end - pad : 0;
    *hi = clipped < g.input[axis] ? clipped : g.input[axis];
}

// Voxels averaged by window `o` along `axis` (see `PoolGeometry::divisor`).
__device__ inline size_t pool_divisor(const PoolGeometry& g, int axis, size_t o,
                                      int count_include_pad) {
    if (count_include_pad) {
        const size_t start = o * g.stride[axis];
        const size_t padded = g.input[axis] + 2 * g.padding[axis];
        const size_t end = start + g.kernel[axis];
        return (end < padded ? end : padded) - start;
    }
    size_t lo, hi;
    pool_window(g, axis, o, &lo, &hi);
    return hi - lo;
}

// Splits a flat output index into (plane, od, oh, ow) and the window bounds.
struct PoolWindow {
    size_t plane, lo[3], hi[3];
};

__device__ inline PoolWindow output_window(const PoolGeometry& g, size_t idx, size_t o[3]) {
    PoolWindow w;
    o[2] = idx % g.output[2];
    o[1] = (idx / g.output[2]) % g.output[1];
    o[0] = (idx / (g.output[2] * g.output[1])) % g.output[0];
    w.plane = idx / (g.output[2] * g.output[1] * g.output[0]);
    for (int a = 0; a < 3; ++a) pool_window(g, a, o[a], &w.lo[a], &w.hi[a]);
    return w;
}

template <typename T>
__device__ void max_pool3d_forward(const T* __restrict__ x, T* __restrict__ y, PoolGeometry g) {
    const size_t in_volume = g.input[0] * g.input[1] * g.input[2];
    const size_t out_count = g.planes * g.output[0] * g.output[1] * g.output[2];
    VNR_GRID_STRIDE(idx, out_count) {
        size_t o[3];
        const PoolWindow w = output_window(g, idx, o);
        if (w.lo[0] == w.hi[0] || w.lo[1] == w.hi[1] || w.lo[2] == w.hi[2]) {
            // Only an empty input axis gives an empty window: the reference's 0.
            y[idx] = T(0);
            continue;
        }
        const T* xp = x + w.plane * in_volume;
        T best = xp[(w.lo[0] * g.input[1] + w.lo[1]) * g.input[2] + w.lo[2]];
        for (size_t id = w.lo[0]; id < w.hi[0]; ++id)
            for (size_t ih = w.lo[1]; ih < w.hi[1]; ++ih)
                for (size_t iw = w.lo[2]; iw < w.hi[2]; ++iw) {
                    const T v = xp[(id * g.input[1] + ih) * g.input[2] + iw];
                    // PyTorch's rule: a larger value or a NaN takes over.
                    if (v > best || isnan(v)) best = v;
                }
        y[idx] = best;
    }
}

// Scatters each `dy` to its window's winner; `dx` must be zeroed. Overlapping windows can
// share a winner, hence the atomic add.
template <typename T>
__device__ void max_pool3d_backward(const T* __restrict__ x, const T* __restrict__ y,
                                    const T* __restrict__ dy, T* __restrict__ dx,
                                    PoolGeometry g) {
    const size_t in_volume = g.input[0] * g.input[1] * g.input[2];
    const size_t out_count = g.planes * g.output[0] * g.output[1] * g.output[2];
    VNR_GRID_STRIDE(idx, out_count) {
        size_t o[3];
        const PoolWindow w = output_window(g, idx, o);
        const T* xp = x + w.plane * in_volume;
        const T target = y[idx];
        const bool nan_target = isnan(target);
        size_t winner = in_volume;  // none
        for (size_t id = w.lo[0]; id < w.hi[0]; ++id)
            for (size_t ih = w.lo[1]; ih < w.hi[1]; ++ih)
                for (size_t iw = w.lo[2]; iw < w.hi[2]; ++iw) {
                    const size_t i = (id * g.input[1] + ih) * g.input[2] + iw;
                    const T v = xp[i];
                    if (nan_target) {
                        if (isnan(v)) winner = i;
                    } else if (v == target) {
                        winner = i;
                        goto found;
                    }
                }
    found:
        if (winner < in_volume) atomicAdd(dx + w.plane * in_volume + winner, dy[idx]);
    }
}

template <typename T>
__device__ void avg_pool3d_forward(const T* __restrict__ x, T* __restrict__ y, PoolGeometry g,
                                   int count_include_pad) {
    const size_t in_volume = g.input[0] * g.input[1] * g.input[2];
    const size_t out_count = g.planes * g.output[0] * g.output[1] * g.output[2];
    VNR_GRID_STRIDE(idx, out_count) {
        size_t o[3];
        const PoolWindow w = output_window(g, idx, o);
        const T* xp = x + w.plane * in_volume;
        T sum = T(0);
        for (size_t id = w.lo[0]; id < w.hi[0]; ++id)
            for (size_t ih = w.lo[1]; ih < w.hi[1]; ++ih)
                for (size_t iw = w.lo[2]; iw < w.hi[2]; ++iw)
                    sum += xp[(id * g.input[1] + ih) * g.input[2] + iw];
        const size_t divisor = pool_divisor(g, 0, o[0], count_include_pad) *
                               pool_divisor(g, 1, o[1], count_include_pad) *
                               pool_divisor(g, 2, o[2], count_include_pad);
        y[idx] = sum / T(divisor);
    }
}

// Outputs [first, last] (inclusive; empty when first > last) whose window along `axis`
// contains input index `i`: o·s − p ≤ i < o·s − p + k.
__device__ inline void windows_containing(const PoolGeometry& g, int axis, size_t i,
                                          size_t* first, size_t* last) {
    const size_t s = g.stride[axis], k = g.kernel[axis], reach = i + g.padding[axis];
    *first = reach + 1 > k ? (reach + 1 - k + s - 1) / s : 0;
    const size_t hi = reach / s;
    *last = hi < g.output[axis] - 1 ? hi : g.output[axis] - 1;
}

// Gathers, for every input voxel, dy / divisor of each window that covers it.
template <typename T>
__device__ void avg_pool3d_backward(const T* __restrict__ dy, T* __restrict__ dx,
                                    PoolGeometry g, int count_include_pad) {
    const size_t out_volume = g.output[0] * g.output[1] * g.output[2];
    const size_t in_count = g.planes * g.input[0] * g.input[1] * g.input[2];
    VNR_GRID_STRIDE(idx, in_count) {
        size_t i[3];
        i[2] = idx % g.input[2];
        i[1] = (idx / g.input[2]) % g.input[1];
        i[0] = (idx / (g.input[2] * g.input[1])) % g.input[0];
        const size_t plane = idx / (g.input[2] * g.input[1] * g.input[0]);
        size_t first[3], last[3];
        for (int a = 0; a < 3; ++a) windows_containing(g, a, i[a], &first[a], &last[a]);
        const T* dyp = dy + plane * out_volume;
        T sum = T(0);
        for (size_t od = first[0]; od <= last[0]; ++od) {
            const size_t div_d = pool_divisor(g, 0, od, count_include_pad);
            for (size_t oh = first[1]; oh <= last[1]; ++oh) {
                const size_t div_h = pool_divisor(g, 1, oh, count_include_pad);
                for (size_t ow = first[2]; ow <= last[2]; ++ow) {
                    const size_t div = div_d * div_h * pool_divisor(g, 2, ow, count_include_pad);
                    sum += dyp[(od * g.output[1] + oh) * g.output[2] + ow] / T(div);
                }
            }
        }
        dx[idx] = sum;
    }
}

#define VNR_POOL_ENTRIES(T, SUFFIX)                                                          \
    extern "C" __global__ void max_pool3d_forward_##SUFFIX(const T* x, T* y,                 \
                                                           PoolGeometry g) {                 \
        max_pool3d_forward<T>(x, y, g);                                                      \
    }                                                                                        \
    extern "C" __global__ void max_pool3d_backward_##SUFFIX(const T* x, const T* y,          \
                                                            const T* dy, T* dx,              \
                                                            PoolGeometry g) {                \
        max_pool3d_backward<T>(x, y, dy, dx, g);                                             \
    }                                                                                        \
    extern "C" __global__ void avg_pool3d_forward_##SUFFIX(const T* x, T* y, PoolGeometry g, \
                                                           int count_include_pad) {          \
        avg_pool3d_forward<T>(x, y, g, count_include_pad);                                   \
    }                                                                                        \
    extern "C" __global__ void avg_pool3d_backward_##SUFFIX(                                 \
        const T* dy, T* dx, PoolGeometry g, int count_include_pad) {                         \
        avg_pool3d_backward<T>(dy, dx, g, count_include_pad);                                \
    }

VNR_POOL_ENTRIES(float, f32)
VNR_POOL_ENTRIES(double, f64)
