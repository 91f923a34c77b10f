// Fused emission-absorption ray marching. Mirrors `src/raymarch.rs`: with
// q_j = (1 + eps) - d_j, E_k = prod_{i<k} q_i, absorption A_k = E_{max(k+1-s, 0)},
// rendered features sum_k d_k A_k f_k and opacity 1 - prod_k (1 - d_k). Products are taken in
// the same order as on the CPU and the backward never divides.
#include "common.cuh"

// Records the smallest flat index whose density is outside [0, 1] (NaN included) in `*bad`,
// which the caller initialises to the element count.
template <typename T>
__device__ void ea_raymarch_check(const T* __restrict__ d, size_t n,
                                  unsigned long long* __restrict__ bad) {
    VNR_GRID_STRIDE(i, n) {
        const T v = d[i];
        if (!(v >= T(0) && v <= T(1))) atomicMin(bad, (unsigned long long)i);
    }
}

// One thread per output element `[ray, column]`: columns `< F` are rendered features, column
// `F` the opacity. densities `[R, P]`, features `[R, P, F]`, out `[R, F + 1]`.
template <typename T>
__device__ void ea_raymarch_forward(const T* __restrict__ d, const T* __restrict__ f,
                                    T* __restrict__ out, size_t rays, size_t points,
                                    size_t features, size_t shift, T one_plus_eps) {
    const size_t width = features + 1;
    VNR_GRID_STRIDE(idx, rays * width) {
        const size_t r = idx / width, c = idx % width;
        const T* dr = d + r * points;
        if (c == features) {
            T transmittance = T(1);
            for (size_t k = 0; k < points; ++k) transmittance *= T(1) - dr[k];
            out[idx] = T(1) - transmittance;
        } else {
            const T* fr = f + r * points * features + c;
            T absorption = T(1);
            T acc = T(0);
            for (size_t k = 0; k < points; ++k) {
                // A_k = prod_{i <= k - s} q_i grows by one factor once k reaches s.
                if (k >= shift) absorption *= one_plus_eps - dr[k - shift];
                acc += (dr[k] * absorption) * fr[k * features];
            }
            out[idx] = acc;
        }
    }
}

// h[r, k] = sum_c f[r, k, c] g[r, c]: the feature gradient projected on each sample.
template <typename T>
__device__ void ea_raymarch_project(const T* __restrict__ f, const T* __restrict__ grad_out,
                                    T* __restrict__ h, size_t rays, size_t points,
                                    size_t features) {
    VNR_GRID_STRIDE(idx, rays * points) {
        const size_t r = idx / points;
        const T* fk = f + idx * features;
        const T* g = grad_out + r * (features + 1);
        T acc = T(0);
        for (size_t c = 0; c < features; ++c) acc += fk[c] * g[c];
        h[idx] = acc;
    }
}

// One thread per ray: the density gradient (column 0 of `grads` `[R, P, F + 1]`), with
// u_m = d_{m+s} h_{m+s} (0 past the end), S_k = u_k + q_{k+1} S_{k+1}:
// dL/dd_k = A_k h_k - E_k S_k + g_o prod_{i != k} (1 - d_i).
// Also leaves E_k in `excl_q` `[R, P]` for the feature gradient kernel.
template <typename T>
__device__ void ea_raymarch_backward_density(const T* __restrict__ d, const T* __restrict__ h,
                                             const T* __restrict__ grad_out,
                                             T* __restrict__ excl_q, T* __restrict__ excl_t,
                                             T* __restrict__ grads, size_t rays, size_t points,
                                             size_t features, size_t shift, T one_plus_eps) {
    const size_t width = features + 1;
    VNR_GRID_STRIDE(r, rays) {
        const T* dr = d + r * points;
        const T* hr = h + r * points;
        T* eq = excl_q + r * points;
        T* et = excl_t + r * points;
        T* gr = grads + r * points * width;
        const T g_opacity = grad_out[r * width + features];
        T q_prod = T(1), t_prod = T(1);
        for (size_t k = 0; k < points; ++k) {
            eq[k] = q_prod;
            et[k] = t_prod;
            q_prod *= one_plus_eps - dr[k];
            t_prod *= T(1) - dr[k];
        }
        T s_next = T(0);
        T suffix_t = T(1);
        for (size_t step = 0; step < points; ++step) {
            const size_t k = points - 1 - step;
            const T u = k + shift < points ? dr[k + shift] * h[r * points + k + shift] : T(0);
            const T s = k + 1 < points ? u + (one_plus_eps - dr[k + 1]) * s_next : u;
            const T a = eq[k + 1 > shift ? k + 1 - shift : 0];
            gr[k * width] = a * hr[k] - eq[k] * s + g_opacity * et[k] * suffix_t;
            s_next = s;
            suffix_t *= T(1) - dr[k];
        }
    }
}

// dL/df[r, k, c] = d_k A_k g_c, written to column `1 + c` of `grads` `[R, P, F + 1]`.
template <typename T>
__device__ void ea_raymarch_backward_features(const T* __restrict__ d,
                                              const T* __restrict__ excl_q,
                                              const T* __restrict__ grad_out,
                                              T* __restrict__ grads, size_t rays, size_t points,
                                              size_t features, size_t shift) {
    const size_t width = features + 1;
    VNR_GRID_STRIDE(idx, rays * points * features) {
        const size_t c = idx % features;
        const size_t rk = idx / features;
        const size_t r = rk / points, k = rk % points;
        const T a = excl_q[r * points + (k + 1 > shift ? k + 1 - shift : 0)];
        grads[rk * width + 1 + c] = (d[rk] * a) * grad_out[r * width + c];
    }
}

#define VNR_RAYMARCH_ENTRIES(T, SUFFIX)                                                      \
    extern "C" __global__ void ea_raymarch_check_##SUFFIX(const T* d, size_t n,              \
                                                          unsigned long long* bad) {         \
        ea_raymarch_check<T>(d, n, bad);                                                     \
    }                                                                                        \
    extern "C" __global__ void ea_raymarch_forward_##SUFFIX(                                 \
        const T* d, const T* f, T* out, size_t rays, size_t points, size_t features,         \
        size_t shift, T one_plus_eps) {                                                      \
        ea_raymarch_forward<T>(d, f, out, rays, points, features, shift, one_plus_eps);      \
    }                                                                                        \
    extern "C" __global__ void ea_raymarch_project_##SUFFIX(                                 \
        const T* f, const T* grad_out, T* h, size_t rays, size_t points, size_t features) {  \
        ea_raymarch_project<T>(f, grad_out, h, rays, points, features);                      \
    }                                                                                        \
    extern "C" __global__ void ea_raymarch_backward_density_##SUFFIX(                        \
        const T* d, const T* h, const T* grad_out, T* excl_q, T* excl_t, T* grads,           \
        size_t rays, size_t points, size_t features, size_t shift, T one_plus_eps) {         \
        ea_raymarch_backward_density<T>(d, h, grad_out, excl_q, excl_t, grads, rays, points, \
                                        features, shift, one_plus_eps);                      \
    }                                                                                        \
    extern "C" __global__ void ea_raymarch_backward_features_##SUFFIX(                       \
        const T* d, const T* excl_q, const T* grad_out, T* grads, size_t rays,               \
        size_t points, size_t features, size_t shift) {                                      \
        ea_raymarch_backward_features<T>(d, excl_q, grad_out, grads, rays, points, features, \
                                         shift);                                             \
    }

VNR_RAYMARCH_ENTRIES(float, f32)
VNR_RAYMARCH_ENTRIES(double, f64)
