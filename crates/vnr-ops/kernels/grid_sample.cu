// 3D grid sampling (PyTorch's `grid_sample` on 5-D inputs) and its gradients. Mirrors
// `src/grid_sample.rs` formula for formula: the same unnormalisation, border clamping (no grid
// gradient at or beyond the clamp), round-half-to-even for nearest, and the same corner order
// (bit 0 of the corner picks x's high voxel, bit 1 y's, bit 2 z's). One thread per output
// point builds the point's taps once and applies them to every channel.
#include "common.cuh"

// Same field order as `GridSampleArg` in `src/cuda/grid_sample.rs`. Sizes of input
// `[n, c, d, h, w]` and of the `points = od·oh·ow` output points per batch item.
struct GridSampleArg {
    unsigned long long n, c, d, h, w, points;
    int nearest;        // 0: trilinear, 1: nearest
    int border;         // 0: zeros padding, 1: border padding
    int align_corners;  // 0 or 1
};

// Source coordinate in voxels of normalised `coord` along an axis of `size` voxels, and its
// derivative with respect to `coord` (0 where border clamping holds it).
template <typename T>
__device__ inline T source_coordinate(T coord, size_t size, const GridSampleArg& p, T* grad) {
    T x;
    if (p.align_corners) {
        const T scale = T(size - 1);
        x = ((coord + T(1)) / T(2)) * scale;
        *grad = scale / T(2);
    } else {
        const T scale = T(size);
        x = ((coord + T(1)) * scale - T(1)) / T(2);
        *grad = scale / T(2);
    }
    if (!p.border) return x;
    const T max = T(size - 1);
    if (x <= T(0)) {
        *grad = T(0);
        return T(0);
    }
    if (x >= max) {
        *grad = T(0);
        return max;
    }
    return x;
}

// Whether the integral float `v` indexes an axis of `size` voxels (false for NaN).
template <typename T>
__device__ inline bool in_range(T v, size_t size) {
    return v >= T(0) && v < T(size);
}

// The voxels (at most 8) one sample reads: corner `k` is read when bit `k` of `mask` is set
// (in range), with its weight and, with `GRAD`, the weight's derivatives with respect to the
// grid's (x, y, z). Fixed slots and unrolled loops keep the taps in registers.
template <typename T>
struct Taps {
    unsigned mask;
    size_t voxel[8];
    T weight[8];
    T dgrid[8][3];
};

template <typename T, bool GRAD>
__device__ inline void build_taps(const T* point, const GridSampleArg& p, Taps<T>* taps) {
    taps->mask = 0;
    T gx, gy, gz;
    const T sx = source_coordinate(point[0], p.w, p, &gx);
    const T sy = source_coordinate(point[1], p.h, p, &gy);
    const T sz = source_coordinate(point[2], p.d, p, &gz);
    if (p.nearest) {
        // rint rounds half to even in the default rounding mode.
        const T ix = rint(sx), iy = rint(sy), iz = rint(sz);
        if (in_range(ix, p.w) && in_range(iy, p.h) && in_range(iz, p.d)) {
            taps->voxel[0] = ((size_t)iz * p.h + (size_t)iy) * p.w + (size_t)ix;
            taps->weight[0] = T(1);
            if (GRAD) taps->dgrid[0][0] = taps->dgrid[0][1] = taps->dgrid[0][2] = T(0);
            taps->mask = 1;
        }
        return;
    }
    const T s[3] = {sx, sy, sz};
    const size_t sizes[3] = {p.w, p.h, p.d};
    size_t index[3][2];
    bool valid[3][2];
    T w[3][2];
    for (int a = 0; a < 3; ++a) {
        const T lo = floor(s[a]);
        const T hi = lo + T(1);
        valid[a][0] = in_range(lo, sizes[a]);
        valid[a][1] = in_range(hi, sizes[a]);
        index[a][0] = valid[a][0] ? (size_t)lo : 0;
        index[a][1] = valid[a][1] ? (size_t)hi : 0;
        w[a][0] = hi - s[a];
        w[a][1] = s[a] - lo;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const int a = k & 1, b = (k >> 1) & 1, c = (k >> 2) & 1;
        if (!(valid[0][a] && valid[1][b] && valid[2][c])) continue;
        taps->mask |= 1u << k;
        taps->voxel[k] = (index[2][c] * p.h + index[1][b]) * p.w + index[0][a];
        taps->weight[k] = w[0][a] * w[1][b] * w[2][c];
        if (GRAD) {
            // d(weight of the low/high voxel)/d(source) is -1/+1.
            const T dx = w[1][b] * w[2][c], dy = w[0][a] * w[2][c], dz = w[0][a] * w[1][b];
            taps->dgrid[k][0] = (a ? dx : -dx) * gx;
            taps->dgrid[k][1] = (b ? dy : -dy) * gy;
            taps->dgrid[k][2] = (c ? dz : -dz) * gz;
        }
    }
}

// input `[N, C, D, H, W]`, grid `[N, P, 3]` → out `[N, C, P]`; one thread per (batch, point).
template <typename T>
__device__ void grid_sample3d_forward(const T* __restrict__ input, const T* __restrict__ grid,
                                      T* __restrict__ out, GridSampleArg p) {
    const size_t voxels = p.d * p.h * p.w;
    VNR_GRID_STRIDE(idx, p.n * p.points) {
        const size_t b = idx / p.points, pi = idx % p.points;
        Taps<T> taps;
        build_taps<T, false>(grid + idx * 3, p, &taps);
        for (size_t ch = 0; ch < p.c; ++ch) {
            const T* plane = input + (b * p.c + ch) * voxels;
            T acc = T(0);
#pragma unroll
            for (int k = 0; k < 8; ++k)
                if (taps.mask >> k & 1) acc += plane[taps.voxel[k]] * taps.weight[k];
            out[(b * p.c + ch) * p.points + pi] = acc;
        }
    }
}

// Gradients of the input (`grad_input`, zeroed by the caller, accumulated with atomic adds:
// neighbouring points share voxels) and, in trilinear mode, of the grid (`grad_grid`
// `[N, P, 3]`, written by the point's thread; left zero in nearest mode).
template <typename T>
__device__ void grid_sample3d_backward(const T* __restrict__ input, const T* __restrict__ grid,
                                       const T* __restrict__ grad_out, T* __restrict__ grad_input,
                                       T* __restrict__ grad_grid, GridSampleArg p) {
    const size_t voxels = p.d * p.h * p.w;
    VNR_GRID_STRIDE(idx, p.n * p.points) {
        const size_t b = idx / p.points, pi = idx % p.points;
        Taps<T> taps;
        build_taps<T, true>(grid + idx * 3, p, &taps);
        T sum[3] = {T(0), T(0), T(0)};
        for (size_t ch = 0; ch < p.c; ++ch) {
            const size_t plane = (b * p.c + ch) * voxels;
            const T g = grad_out[(b * p.c + ch) * p.points + pi];
            T s[3] = {T(0), T(0), T(0)};
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                if (!(taps.mask >> k & 1)) continue;
                atomicAdd(grad_input + plane + taps.voxel[k], taps.weight[k] * g);
                const T value = input[plane + taps.voxel[k]];
                s[0] += value * taps.dgrid[k][0];
                s[1] += value * taps.dgrid[k][1];
                s[2] += value * taps.dgrid[k][2];
            }
            for (int a = 0; a < 3; ++a) sum[a] += s[a] * g;
        }
        if (!p.nearest)
            for (int a = 0; a < 3; ++a) grad_grid[idx * 3 + a] = sum[a];
    }
}

#define VNR_GRID_SAMPLE_ENTRIES(T, SUFFIX)                                                   \
    extern "C" __global__ void grid_sample3d_forward_##SUFFIX(const T* input, const T* grid, \
                                                              T* out, GridSampleArg p) {     \
        grid_sample3d_forward<T>(input, grid, out, p);                                       \
    }                                                                                        \
    extern "C" __global__ void grid_sample3d_backward_##SUFFIX(                              \
        const T* input, const T* grid, const T* grad_out, T* grad_input, T* grad_grid,       \
        GridSampleArg p) {                                                                   \
        grid_sample3d_backward<T>(input, grid, grad_out, grad_input, grad_grid, p);          \
    }

VNR_GRID_SAMPLE_ENTRIES(float, f32)
VNR_GRID_SAMPLE_ENTRIES(double, f64)
