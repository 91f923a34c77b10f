// Runs vnr-ops' conv and grid-sample CUDA kernels on the host, so they can be checked on a
// machine without a GPU: `__global__`/`__device__` are emptied and each launch is one thread
// whose grid-stride loop walks every work item (atomics become plain adds). Build and run
// with tools/cuda/host_check.sh. Checks, in f64:
//  - conv: vol2col + a plain matrix product per tile equals the convolution's definition, and
//    (plain product + col2vol) equals the definition of its input gradient, for tiles of one
//    output row, of several rows, of whole samples;
//  - grid sample: voxel centres sample the voxels exactly, the input gradient is the adjoint of
//    the forward, and the grid gradient matches central finite differences.
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
using std::floor;
using std::isnan;
using std::rint;

#include "conv.cu"
#include "grid_sample.cu"

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
            col2vol<double>(col.data(), dx.data(), g, t, 0, g.input[0]);
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
    if (failures) {
        std::printf("host_check: %d failures\n", failures);
        return 1;
    }
    std::printf("host_check: conv (4 geometries × 4 tilings) and grid sample (8 modes) ok\n");
    return 0;
}
