// Runs vnr-ops' conv and grid-sample CUDA kernels on the host, so they can be checked on a
// machine without a GPU: `__global__`/`__device__` are emptied and each launch is one thread
// whose grid-stride loop walks every work item (atomics become plain adds). Build and run
// with tools/cuda/host_check.sh. Checks, in f64:
//  - conv: vol2col + a plain matrix product per tile equals the convolution's definition, and
//    (plain product + col2vol) equals the definition of its input gradient, for tiles of one
//    output row, of several rows, of whole samples;
//  - grid sample: voxel centres sample the voxels exactly, the input gradient is the adjoint of
//    the forward, and the grid gradient matches central finite differences;
//  - pooling: max and average pooling against their definitions (windows clipped to the input,
//    NaN propagating, the max gradient to the first maximum or the last NaN, both
//    count_include_pad divisors), the average backward as the forward's adjoint;
//  - cumulative: cumsum / cumprod, inclusive and exclusive, forwards and reversed, against
//    plain loops, and the cumprod gradient against its division-free definition;
//  - ray marching: the forward against PyTorch3D's formula, the density check, and both
//    gradients against central finite differences.
// The GPU-vs-CPU comparison itself is crates/vnr-ops/tests/cuda.rs (needs a GPU).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

struct HostDim3 {
    unsigned x;
};
static const HostDim3 blockIdx{0}, threadIdx{0}, blockDim{1}, gridDim{1};
#define __global__
#define __device__
template <typename T>
T atomicAdd(T* p, T v) {
    const T old = *p;
    *p += v;
    return old;
}
static unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}
using std::floor;
using std::isnan;
using std::rint;

#include "conv.cu"
#include "cumulative.cu"
#include "grid_sample.cu"
#include "pool.cu"
#include "raymarch.cu"

static int failures = 0;

static void expect_close(const char* what, double got, double want, double tol) {
    if (std::fabs(got - want) > tol * (1.0 + std::fabs(want))) {
        if (failures < 20) std::printf("FAIL %s: got %.17g want %.17g\n", what, got, want);
        ++failures;
    }
}

static void expect_all_close(const char* what, const std::vector<double>& got,
                             const std::vector<double>& want, double tol) {
    for (size_t i = 0; i < got.size(); ++i) expect_close(what, got[i], want[i], tol);
}

static std::mt19937_64 rng(7);
static std::vector<double> random_vector(size_t n, double lo = -1.0, double hi = 1.0) {
    std::uniform_real_distribution<double> u(lo, hi);
    std::vector<double> v(n);
    for (auto& x : v) x = u(rng);
    return v;
}

// ---------------------------------------------------------------- conv

struct ConvCase {
    size_t n, c, o, groups, in[3], k[3], s[3], d[3], pad_before[3], pad_after[3];
};

static ConvGeometry geometry_of(const ConvCase& cc) {
    ConvGeometry g{};
    g.batch = cc.n;
    g.in_channels = cc.c;
    g.out_channels = cc.o;
    g.groups = cc.groups;
    for (int a = 0; a < 3; ++a) {
        g.input[a] = cc.in[a];
        g.kernel[a] = cc.k[a];
        g.stride[a] = cc.s[a];
        g.dilation[a] = cc.d[a];
        g.pad[a] = cc.pad_before[a];
        const size_t padded = cc.in[a] + cc.pad_before[a] + cc.pad_after[a];
        const size_t span = cc.d[a] * (cc.k[a] - 1) + 1;
        g.output[a] = (padded - span) / cc.s[a] + 1;
    }
    return g;
}

// y[N, O, P] and dx[N, C, V] straight from the definition.
static void conv_reference(const ConvGeometry& g, const std::vector<double>& x,
                           const std::vector<double>& w, const std::vector<double>& dy,
                           std::vector<double>& y, std::vector<double>& dx) {
    const size_t cg = g.in_channels / g.groups, og = g.out_channels / g.groups;
    const size_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2];
    const size_t vin = g.input[0] * g.input[1] * g.input[2];
    const size_t vout = g.output[0] * g.output[1] * g.output[2];
    y.assign(g.batch * g.out_channels * vout, 0.0);
    dx.assign(g.batch * g.in_channels * vin, 0.0);
    for (size_t n = 0; n < g.batch; ++n)
        for (size_t oc = 0; oc < g.out_channels; ++oc)
            for (size_t p = 0; p < vout; ++p) {
                const size_t o[3] = {p / (g.output[1] * g.output[2]),
                                     (p / g.output[2]) % g.output[1], p % g.output[2]};
                const size_t group = oc / og;
                for (size_t c = 0; c < cg; ++c)
                    for (size_t tap = 0; tap < taps; ++tap) {
                        const size_t k[3] = {tap / (g.kernel[1] * g.kernel[2]),
                                             (tap / g.kernel[2]) % g.kernel[1],
                                             tap % g.kernel[2]};
                        size_t i[3];
                        bool inside = true;
                        for (int a = 0; a < 3; ++a) {
                            const size_t reach = o[a] * g.stride[a] + k[a] * g.dilation[a];
                            const long long r = (long long)reach - (long long)g.pad[a];
                            inside = inside && r >= 0 && r < (long long)g.input[a];
                            i[a] = (size_t)r;
                        }
                        if (!inside) continue;
                        const size_t channel = n * g.in_channels + group * cg + c;
                        const size_t xi =
                            ((channel * g.input[0] + i[0]) * g.input[1] + i[1]) * g.input[2] + i[2];
                        const double wv = w[(oc * cg + c) * taps + tap];
                        y[(n * g.out_channels + oc) * vout + p] += wv * x[xi];
                        dx[xi] += wv * dy[(n * g.out_channels + oc) * vout + p];
                    }
            }
}

// The passes as src/cuda/conv.rs runs them, with plain products in place of cuBLAS.
static void conv_tiled(const ConvGeometry& g, const std::vector<ColumnTile>& tiles,
                       const std::vector<double>& x, const std::vector<double>& w,
                       const std::vector<double>& dy, std::vector<double>& y,
                       std::vector<double>& dx) {
    const size_t cg = g.in_channels / g.groups, og = g.out_channels / g.groups;
    const size_t rows = cg * g.kernel[0] * g.kernel[1] * g.kernel[2];
    const size_t vout = g.output[0] * g.output[1] * g.output[2];
    y.assign(g.batch * g.out_channels * vout, std::nan(""));
    dx.assign(g.batch * g.in_channels * g.input[0] * g.input[1] * g.input[2], 0.0);
    for (ColumnTile t : tiles)
        for (size_t group = 0; group < g.groups; ++group) {
            t.group = group;
            const size_t np = t.rows * g.output[2], p0 = t.first_row * g.output[2];
            std::vector<double> col(rows * t.samples * np, std::nan(""));
            vol2col<double>(x.data(), col.data(), g, t);
            // Output rows of sample j and group channel oc start at out_row(j, oc).
            auto out_row = [&](size_t j, size_t oc) {
                return ((t.first_sample + j) * g.out_channels + group * og + oc) * vout + p0;
            };
            const double* wg = w.data() + group * og * rows;
            for (size_t j = 0; j < t.samples; ++j)
                for (size_t oc = 0; oc < og; ++oc)
                    for (size_t q = 0; q < np; ++q) {
                        double sum = 0.0;
                        for (size_t r = 0; r < rows; ++r)
                            sum += wg[oc * rows + r] * col[(r * t.samples + j) * np + q];
                        y[out_row(j, oc) + q] = sum;
                    }
            // Input gradient: col = W_gᵀ · dy_g, then col2vol over every input depth.
            for (size_t r = 0; r < rows; ++r)
                for (size_t j = 0; j < t.samples; ++j)
                    for (size_t q = 0; q < np; ++q) {
                        double sum = 0.0;
                        for (size_t oc = 0; oc < og; ++oc)
                            sum += wg[oc * rows + r] * dy[out_row(j, oc) + q];
                        col[(r * t.samples + j) * np + q] = sum;
                    }
            // The input depths the tile's rows reach, as `ConvGeometry::input_depths`.
            const size_t oh = g.output[1];
            const size_t od_lo = t.first_row / oh, od_hi = (t.first_row + t.rows - 1) / oh;
            const size_t lo_reach = od_lo * g.stride[0];
            const size_t reach = od_hi * g.stride[0] + (g.kernel[0] - 1) * g.dilation[0] + 1;
            size_t hi = reach > g.pad[0] ? reach - g.pad[0] : 0;
            hi = hi < g.input[0] ? hi : g.input[0];
            size_t lo = lo_reach > g.pad[0] ? lo_reach - g.pad[0] : 0;
            lo = lo < hi ? lo : hi;
            col2vol<double>(col.data(), dx.data(), g, t, lo, hi);
        }
}

static void check_conv(const ConvCase& cc) {
    const ConvGeometry g = geometry_of(cc);
    const size_t cg = g.in_channels / g.groups;
    const size_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2];
    const size_t out_rows = g.output[0] * g.output[1];
    const auto x = random_vector(g.batch * g.in_channels * g.input[0] * g.input[1] * g.input[2]);
    const auto w = random_vector(g.out_channels * cg * taps);
    const auto dy = random_vector(g.batch * g.out_channels * out_rows * g.output[2]);
    std::vector<double> y_ref, dx_ref;
    conv_reference(g, x, w, dy, y_ref, dx_ref);
    const size_t row_tiles[] = {1, 3, out_rows};
    for (size_t per : row_tiles) {
        std::vector<ColumnTile> tiles;
        for (size_t n = 0; n < g.batch; ++n)
            for (size_t r = 0; r < out_rows; r += per)
                tiles.push_back({n, 1, r, per < out_rows - r ? per : out_rows - r, 0});
        std::vector<double> y, dx;
        conv_tiled(g, tiles, x, w, dy, y, dx);
        expect_all_close("conv y (row tiles)", y, y_ref, 1e-12);
        expect_all_close("conv dx (row tiles)", dx, dx_ref, 1e-12);
    }
    // All samples in one tile.
    std::vector<double> y, dx;
    conv_tiled(g, {{0, g.batch, 0, out_rows, 0}}, x, w, dy, y, dx);
    expect_all_close("conv y (sample tile)", y, y_ref, 1e-12);
    expect_all_close("conv dx (sample tile)", dx, dx_ref, 1e-12);
}

// ---------------------------------------------------------------- grid sample

static std::vector<double> sample(const GridSampleArg& p, const std::vector<double>& input,
                                  const std::vector<double>& grid) {
    std::vector<double> out(p.n * p.c * p.points);
    grid_sample3d_forward<double>(input.data(), grid.data(), out.data(), p);
    return out;
}

static double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0.0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

static void check_grid_sample(int nearest, int border, int align_corners) {
    GridSampleArg p{};
    p.n = 2, p.c = 3, p.d = 5, p.h = 6, p.w = 7, p.points = 60;
    p.nearest = nearest, p.border = border, p.align_corners = align_corners;
    const size_t voxels = p.d * p.h * p.w;
    const auto input = random_vector(p.n * p.c * voxels);
    const auto grid = random_vector(p.n * p.points * 3, -1.2, 1.2);
    const auto g = random_vector(p.n * p.c * p.points);
    const auto out = sample(p, input, grid);

    // Voxel centres read the voxels themselves.
    if (align_corners) {
        GridSampleArg centre = p;
        centre.points = voxels;
        std::vector<double> at(p.n * voxels * 3);
        for (size_t b = 0; b < p.n; ++b)
            for (size_t v = 0; v < voxels; ++v) {
                const size_t idx[3] = {v % p.w, (v / p.w) % p.h, v / (p.w * p.h)};
                const size_t size[3] = {p.w, p.h, p.d};
                for (int a = 0; a < 3; ++a)
                    at[(b * voxels + v) * 3 + a] = -1.0 + 2.0 * idx[a] / (size[a] - 1.0);
            }
        const auto exact = sample(centre, input, at);
        expect_all_close("grid centre", exact, input, 1e-12);
    }

    std::vector<double> grads(input.size() + grid.size(), 0.0);
    grid_sample3d_backward<double>(input.data(), grid.data(), g.data(), grads.data(),
                                   grads.data() + input.size(), p);
    const std::vector<double> grad_input(grads.begin(), grads.begin() + input.size());
    // Linear in the input: the input gradient is the forward's adjoint.
    expect_close("grid adjoint", dot(input, grad_input), dot(out, g), 1e-12);
    if (nearest) return;
    const double h = 1e-6;
    for (size_t i = 0; i < grid.size(); ++i) {
        auto plus = grid, minus = grid;
        plus[i] += h;
        minus[i] -= h;
        const double up = dot(sample(p, input, plus), g), down = dot(sample(p, input, minus), g);
        const double fd = (up - down) / (2 * h);
        expect_close("grid gradient vs finite differences", grads[input.size() + i], fd, 1e-5);
    }
}

// ---------------------------------------------------------------- pooling

struct PoolCase {
    size_t planes, in[3], k[3], s[3], p[3];
};

static PoolGeometry pool_geometry(const PoolCase& pc) {
    PoolGeometry g{};
    g.planes = pc.planes;
    for (int a = 0; a < 3; ++a) {
        g.input[a] = pc.in[a];
        g.kernel[a] = pc.k[a];
        g.stride[a] = pc.s[a];
        g.padding[a] = pc.p[a];
        g.output[a] = (pc.in[a] + 2 * pc.p[a] - pc.k[a]) / pc.s[a] + 1;
    }
    return g;
}

// Calls f(plane, output flat index, input flat index) for every (window, voxel inside it) in
// (kd, kh, kw) order, from the definition: window o covers padded [o·s, o·s + k).
template <typename F>
static void for_each_window_voxel(const PoolGeometry& g, F f) {
    const size_t vin = g.input[0] * g.input[1] * g.input[2];
    const size_t vout = g.output[0] * g.output[1] * g.output[2];
    for (size_t plane = 0; plane < g.planes; ++plane)
        for (size_t o = 0; o < vout; ++o) {
            const size_t oi[3] = {o / (g.output[1] * g.output[2]), (o / g.output[2]) % g.output[1],
                                  o % g.output[2]};
            for (size_t kd = 0; kd < g.kernel[0]; ++kd)
                for (size_t kh = 0; kh < g.kernel[1]; ++kh)
                    for (size_t kw = 0; kw < g.kernel[2]; ++kw) {
                        const size_t k[3] = {kd, kh, kw};
                        long long i[3];
                        bool inside = true;
                        for (int a = 0; a < 3; ++a) {
                            i[a] = (long long)(oi[a] * g.stride[a] + k[a]) - (long long)g.padding[a];
                            inside = inside && i[a] >= 0 && i[a] < (long long)g.input[a];
                        }
                        if (!inside) continue;
                        f(plane, plane * vout + o,
                          plane * vin + ((i[0] * g.input[1] + i[1]) * g.input[2] + i[2]));
                    }
        }
}

static void check_pool(const PoolCase& pc, bool with_nan) {
    const PoolGeometry g = pool_geometry(pc);
    const size_t vin = g.planes * g.input[0] * g.input[1] * g.input[2];
    const size_t vout = g.planes * g.output[0] * g.output[1] * g.output[2];
    // Coarse values, so windows hold ties, and a few NaNs.
    auto x = random_vector(vin);
    for (auto& v : x) v = std::round(v * 4.0) / 4.0;
    if (with_nan)
        for (size_t i = 0; i < vin; i += 7) x[i] = std::nan("");
    const auto dy = random_vector(vout);

    // Max: the first maximum of the window, or its last NaN.
    std::vector<double> y_ref(vout, 0.0), dx_ref(vin, 0.0);
    std::vector<long long> winner(vout, -1);
    for_each_window_voxel(g, [&](size_t, size_t o, size_t i) {
        const double v = x[i];
        if (winner[o] < 0 || v > y_ref[o] || std::isnan(v)) {
            if (winner[o] < 0 || !std::isnan(y_ref[o]) || std::isnan(v)) {
                y_ref[o] = v;
                winner[o] = (long long)i;
            }
        }
    });
    for (size_t o = 0; o < vout; ++o)
        if (winner[o] >= 0) dx_ref[winner[o]] += dy[o];
    std::vector<double> y(vout, -7.0), dx(vin, 0.0);
    max_pool3d_forward<double>(x.data(), y.data(), g);
    max_pool3d_backward<double>(x.data(), y.data(), dy.data(), dx.data(), g);
    for (size_t o = 0; o < vout; ++o) {
        const bool both_nan = std::isnan(y[o]) && std::isnan(y_ref[o]);
        if (!both_nan) expect_close("max pool y", y[o], y_ref[o], 0.0);
    }
    expect_all_close("max pool dx", dx, dx_ref, 1e-12);
    if (with_nan) return;

    // Average, both divisors: the clipped window's size, or the window inside the padded input.
    for (int include = 0; include < 2; ++include) {
        std::vector<double> sum(vout, 0.0), count(vout, 0.0);
        for_each_window_voxel(g, [&](size_t, size_t o, size_t i) {
            sum[o] += x[i];
            count[o] += 1.0;
        });
        if (include)
            for (size_t o = 0; o < vout; ++o) {
                const size_t flat = o % (g.output[0] * g.output[1] * g.output[2]);
                const size_t oi[3] = {flat / (g.output[1] * g.output[2]),
                                      (flat / g.output[2]) % g.output[1], flat % g.output[2]};
                double divisor = 1.0;
                for (int a = 0; a < 3; ++a) {
                    const size_t start = oi[a] * g.stride[a];
                    const size_t end = start + g.kernel[a];
                    const size_t padded = g.input[a] + 2 * g.padding[a];
                    divisor *= (double)((end < padded ? end : padded) - start);
                }
                count[o] = divisor;
            }
        std::vector<double> avg_ref(vout);
        for (size_t o = 0; o < vout; ++o) avg_ref[o] = sum[o] / count[o];
        std::vector<double> avg(vout), back(vin, -7.0);
        avg_pool3d_forward<double>(x.data(), avg.data(), g, include);
        expect_all_close("avg pool y", avg, avg_ref, 1e-12);
        avg_pool3d_backward<double>(dy.data(), back.data(), g, include);
        // Linear: the backward is the forward's adjoint.
        expect_close("avg pool adjoint", dot(x, back), dot(avg, dy), 1e-12);
    }
}

// ---------------------------------------------------------------- cumulative

static void check_cumulative() {
    const size_t outer = 3, len = 6, inner = 4;
    const auto x = random_vector(outer * len * inner, 0.5, 1.5);
    const auto g = random_vector(outer * len * inner);
    auto at = [&](size_t o, size_t k, size_t i) { return (o * len + k) * inner + i; };
    for (int prod = 0; prod < 2; ++prod)
        for (int exclusive = 0; exclusive < 2; ++exclusive)
            for (int reverse = 0; reverse < 2; ++reverse) {
                std::vector<double> got(x.size(), std::nan(""));
                if (prod)
                    cumprod_f64(x.data(), got.data(), outer, len, inner, exclusive, reverse);
                else
                    cumsum_f64(x.data(), got.data(), outer, len, inner, exclusive, reverse);
                for (size_t o = 0; o < outer; ++o)
                    for (size_t i = 0; i < inner; ++i)
                        for (size_t k = 0; k < len; ++k) {
                            // Elements before k (after k when reversed), k itself unless
                            // exclusive.
                            double want = prod ? 1.0 : 0.0;
                            for (size_t j = 0; j < len; ++j) {
                                const bool before = reverse ? j > k : j < k;
                                if (!(before || (j == k && !exclusive))) continue;
                                want = prod ? want * x[at(o, j, i)] : want + x[at(o, j, i)];
                            }
                            expect_close("cumulative", got[at(o, k, i)], want, 1e-12);
                        }
            }
    // d/dx_k Σ_j g_j y_j with y_j = Π over j's elements: the product of the others, no division.
    for (int exclusive = 0; exclusive < 2; ++exclusive) {
        std::vector<double> dx(x.size(), std::nan(""));
        cumprod_backward_f64(x.data(), g.data(), dx.data(), outer, len, inner, exclusive);
        for (size_t o = 0; o < outer; ++o)
            for (size_t i = 0; i < inner; ++i)
                for (size_t k = 0; k < len; ++k) {
                    double want = 0.0;
                    for (size_t j = 0; j < len; ++j) {
                        const bool has_k = exclusive ? k < j : k <= j;
                        if (!has_k) continue;
                        double others = 1.0;
                        for (size_t m = 0; m < (exclusive ? j : j + 1); ++m)
                            if (m != k) others *= x[at(o, m, i)];
                        want += g[at(o, j, i)] * others;
                    }
                    expect_close("cumprod gradient", dx[at(o, k, i)], want, 1e-12);
                }
    }
}

// ---------------------------------------------------------------- ray marching

// PyTorch3D's EmissionAbsorptionRaymarcher on densities [R, P] and features [R, P, F]:
// absorption A_k = Π_{i < k + 1 - s} (1 + eps - d_i), features Σ_k d_k A_k f_k, opacity
// 1 - Π_k (1 - d_k).
static std::vector<double> raymarch_reference(const std::vector<double>& d,
                                              const std::vector<double>& f, size_t rays,
                                              size_t points, size_t features, size_t shift,
                                              double eps) {
    std::vector<double> out(rays * (features + 1), 0.0);
    for (size_t r = 0; r < rays; ++r) {
        double t = 1.0;
        for (size_t k = 0; k < points; ++k) {
            double a = 1.0;
            for (size_t i = 0; i + shift < k + 1; ++i) a *= 1.0 + eps - d[r * points + i];
            for (size_t c = 0; c < features; ++c)
                out[r * (features + 1) + c] +=
                    d[r * points + k] * a * f[(r * points + k) * features + c];
            t *= 1.0 - d[r * points + k];
        }
        out[r * (features + 1) + features] = 1.0 - t;
    }
    return out;
}

static void check_raymarch(size_t shift) {
    const size_t rays = 3, points = 7, features = 2;
    const double eps = 1e-3;
    const auto d = random_vector(rays * points, 0.05, 0.95);
    const auto f = random_vector(rays * points * features);
    const auto g = random_vector(rays * (features + 1));
    auto forward = [&](const std::vector<double>& dd, const std::vector<double>& ff) {
        std::vector<double> out(rays * (features + 1), std::nan(""));
        ea_raymarch_forward_f64(dd.data(), ff.data(), out.data(), rays, points, features, shift,
                                1.0 + eps);
        return out;
    };
    const auto out = forward(d, f);
    expect_all_close("raymarch forward", out,
                     raymarch_reference(d, f, rays, points, features, shift, eps), 1e-12);

    // The density check finds the first value outside [0, 1], NaN included.
    for (double bad : {-0.25, 1.5, std::nan("")}) {
        auto dd = d;
        dd[9] = bad;
        dd[13] = bad;
        unsigned long long first = dd.size();
        ea_raymarch_check_f64(dd.data(), dd.size(), &first);
        expect_close("raymarch density check", (double)first, 9.0, 0.0);
    }
    unsigned long long none = d.size();
    ea_raymarch_check_f64(d.data(), d.size(), &none);
    expect_close("raymarch density check (valid)", (double)none, (double)d.size(), 0.0);

    // Backward as src/cuda.rs launches it: project, densities, then features.
    std::vector<double> h(rays * points), excl_q(rays * points), excl_t(rays * points);
    std::vector<double> grads(rays * points * (features + 1), std::nan(""));
    ea_raymarch_project_f64(f.data(), g.data(), h.data(), rays, points, features);
    ea_raymarch_backward_density_f64(d.data(), h.data(), g.data(), excl_q.data(), excl_t.data(),
                                     grads.data(), rays, points, features, shift, 1.0 + eps);
    ea_raymarch_backward_features_f64(d.data(), excl_q.data(), g.data(), grads.data(), rays,
                                      points, features, shift);
    const double step = 1e-6;
    for (size_t i = 0; i < d.size(); ++i) {
        auto up = d, down = d;
        up[i] += step;
        down[i] -= step;
        const double fd = (dot(forward(up, f), g) - dot(forward(down, f), g)) / (2 * step);
        expect_close("raymarch density gradient", grads[i * (features + 1)], fd, 1e-6);
    }
    for (size_t i = 0; i < f.size(); ++i) {
        auto up = f, down = f;
        up[i] += step;
        down[i] -= step;
        const double fd = (dot(forward(d, up), g) - dot(forward(d, down), g)) / (2 * step);
        const size_t sample = i / features, c = i % features;
        expect_close("raymarch feature gradient", grads[sample * (features + 1) + 1 + c], fd,
                     1e-6);
    }
}

int main() {
    const ConvCase conv_cases[] = {
        // groups, per-axis stride and dilation, asymmetric padding
        {2, 4, 6, 2, {7, 6, 5}, {3, 2, 3}, {2, 1, 2}, {1, 2, 1}, {1, 2, 0}, {0, 1, 2}},
        // stride > kernel, padding larger than the kernel
        {1, 2, 3, 1, {9, 8, 9}, {2, 2, 2}, {3, 3, 3}, {1, 1, 1}, {3, 3, 3}, {3, 3, 3}},
        // dilation with heavy padding
        {2, 3, 2, 1, {4, 5, 3}, {3, 3, 3}, {1, 1, 1}, {2, 2, 2}, {4, 4, 4}, {4, 4, 4}},
        // pointwise-sized kernel through vol2col
        {3, 2, 4, 2, {3, 4, 2}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}},
    };
    for (const auto& cc : conv_cases) check_conv(cc);
    for (int nearest = 0; nearest < 2; ++nearest)
        for (int border = 0; border < 2; ++border)
            for (int align = 0; align < 2; ++align) check_grid_sample(nearest, border, align);
    const PoolCase pool_cases[] = {
        // ConvDeconv's MaxPool3d(3, 1, 1), two planes
        {2, {5, 6, 7}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}},
        // anisotropic kernel and stride, stride > kernel on one axis
        {3, {7, 5, 9}, {2, 3, 1}, {2, 1, 3}, {1, 1, 0}},
        // stride 2 with padding: windows partly in the padding
        {1, {6, 7, 8}, {3, 2, 3}, {2, 2, 2}, {1, 1, 1}},
    };
    for (const auto& pc : pool_cases) {
        check_pool(pc, false);
        check_pool(pc, true);
    }
    check_cumulative();
    for (size_t shift : {1, 2, 7, 9}) check_raymarch(shift);
    if (failures) {
        std::printf("host_check: %d failures\n", failures);
        return 1;
    }
    std::printf(
        "host_check: conv (4 geometries × 4 tilings), grid sample (8 modes), pooling (3 "
        "geometries, with and without NaN), cumulative (8 scans, 2 gradients) and ray marching "
        "(4 thicknesses) ok\n");
    return 0;
}
