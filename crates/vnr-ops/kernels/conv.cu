// vol2col and its adjoint col2vol for 3D convolution on the GPU; the matrix products run in
// cuBLAS (`src/cuda/conv.rs`). Mirrors `src/conv/kernels.rs`: the column matrix of one group
// and one tile has a row per (input channel, kernel tap) and a column per output voxel, and
// tap `(kd, kh, kw)` of output voxel `(od, oh, ow)` reads input voxel
// `(od·s − p + kd·d, …)`, zero outside the input (`ConvGeometry::input_index`).
#include "common.cuh"

// Same field order as `ConvGeometryArg` in `src/cuda/conv.rs`; per-axis values are [D, H, W].
struct ConvGeometry {
    unsigned long long batch;
    unsigned long long in_channels;
    unsigned long long out_channels;
    unsigned long long groups;
    unsigned long long input[3];
    unsigned long long output[3];
    unsigned long long kernel[3];
    unsigned long long stride[3];
    unsigned long long dilation[3];
    unsigned long long pad[3];
};

// One tile of the column matrix (`ColumnTileArg` in `src/cuda/conv.rs`): samples
// [first_sample, first_sample + samples) × output rows [first_row, first_row + rows), a row
// being one (od, oh) pair of Wo voxels, for channel group `group`. Its columns are laid out
// `[C/groups · K][samples][rows · Wo]`.
struct ColumnTile {
    unsigned long long first_sample;
    unsigned long long samples;
    unsigned long long first_row;
    unsigned long long rows;
    unsigned long long group;
};

// Input index along `axis` read by output index `o` at tap `k`; false outside the input.
__device__ inline bool conv_input_index(const ConvGeometry& g, int axis, size_t o, size_t k,
                                        size_t* i) {
    const size_t reach = o * g.stride[axis] + k * g.dilation[axis];
    if (reach < g.pad[axis]) return false;
    *i = reach - g.pad[axis];
    return *i < g.input[axis];
}

// Output index along `axis` whose tap `k` reads input index `i`; false when there is none.
__device__ inline bool conv_output_index(const ConvGeometry& g, int axis, size_t i, size_t k,
                                         size_t* o) {
    const size_t reach = i + g.pad[axis];
    const size_t offset = k * g.dilation[axis];
    if (reach < offset || (reach - offset) % g.stride[axis] != 0) return false;
    *o = (reach - offset) / g.stride[axis];
    return *o < g.output[axis];
}

// Fills the tile's column matrix from `x` `[N, C, D, H, W]`; one thread per column entry.
template <typename T>
__device__ void vol2col(const T* __restrict__ x, T* __restrict__ col, ConvGeometry g,
                        ColumnTile t) {
    const size_t group_in = g.in_channels / g.groups;
    const size_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2];
    const size_t in_volume = g.input[0] * g.input[1] * g.input[2];
    const size_t width = t.rows * g.output[2];
    VNR_GRID_STRIDE(idx, group_in * taps * t.samples * width) {
        const size_t q = idx % width;
        const size_t j = (idx / width) % t.samples;
        const size_t row = idx / (width * t.samples);
        const size_t c = row / taps, tap = row % taps;
        const size_t k[3] = {tap / (g.kernel[1] * g.kernel[2]), (tap / g.kernel[2]) % g.kernel[1],
                             tap % g.kernel[2]};
        const size_t out_row = t.first_row + q / g.output[2];
        const size_t o[3] = {out_row / g.output[1], out_row % g.output[1], q % g.output[2]};
        size_t i[3];
        T value = T(0);
        if (conv_input_index(g, 0, o[0], k[0], &i[0]) &&
            conv_input_index(g, 1, o[1], k[1], &i[1]) &&
            conv_input_index(g, 2, o[2], k[2], &i[2])) {
            const size_t channel =
                (t.first_sample + j) * g.in_channels + t.group * group_in + c;
            value = x[channel * in_volume + (i[0] * g.input[1] + i[1]) * g.input[2] + i[2]];
        }
        col[idx] = value;
    }
}

// Adds the tile's column matrix back into `dx` `[N, C, D, H, W]`: the adjoint of vol2col, in
// gather form (one thread per input voxel, no atomics). Only input depths
// [depth_lo, depth_hi) can receive anything from the tile's output rows.
template <typename T>
__device__ void col2vol(const T* __restrict__ col, T* __restrict__ dx, ConvGeometry g,
                        ColumnTile t, size_t depth_lo, size_t depth_hi) {
    const size_t group_in = g.in_channels / g.groups;
    const size_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2];
    const size_t in_volume = g.input[0] * g.input[1] * g.input[2];
    const size_t width = t.rows * g.output[2];
    const size_t slab = (depth_hi - depth_lo) * g.input[1] * g.input[2];
    VNR_GRID_STRIDE(idx, t.samples * group_in * slab) {
        const size_t iw = idx % g.input[2];
        const size_t ih = (idx / g.input[2]) % g.input[1];
        const size_t id = depth_lo + (idx / (g.input[2] * g.input[1])) % (depth_hi - depth_lo);
        const size_t c = (idx / slab) % group_in;
        const size_t j = idx / (slab * group_in);
        T sum = T(0);
        for (size_t kd = 0; kd < g.kernel[0]; ++kd) {
            size_t od;
            if (!conv_output_index(g, 0, id, kd, &od)) continue;
            for (size_t kh = 0; kh < g.kernel[1]; ++kh) {
                size_t oh;
                if (!conv_output_index(g, 1, ih, kh, &oh)) continue;
                const size_t out_row = od * g.output[1] + oh;
                if (out_row < t.first_row || out_row >= t.first_row + t.rows) continue;
                const size_t row_base = (out_row - t.first_row) * g.output[2];
                for (size_t kw = 0; kw < g.kernel[2]; ++kw) {
                    size_t ow;
                    if (!conv_output_index(g, 2, iw, kw, &ow)) continue;
                    const size_t tap = (kd * g.kernel[1] + kh) * g.kernel[2] + kw;
                    sum += col[((c * taps + tap) * t.samples + j) * width + row_base + ow];
                }
            }
        }
        const size_t channel = (t.first_sample + j) * g.in_channels + t.group * group_in + c;
        dx[channel * in_volume + (id * g.input[1] + ih) * g.input[2] + iw] += sum;
    }
}

#define VNR_CONV_ENTRIES(T, SUFFIX)                                                          \
    extern "C" __global__ void vol2col_##SUFFIX(const T* x, T* col, ConvGeometry g,          \
                                                ColumnTile t) {                              \
        vol2col<T>(x, col, g, t);                                                            \
    }                                                                                        \
    extern "C" __global__ void col2vol_##SUFFIX(const T* col, T* dx, ConvGeometry g,         \
                                                ColumnTile t, size_t depth_lo,               \
                                                size_t depth_hi) {                           \
        col2vol<T>(col, dx, g, t, depth_lo, depth_hi);                                       \
    }

VNR_CONV_ENTRIES(float, f32)
VNR_CONV_ENTRIES(double, f64)
