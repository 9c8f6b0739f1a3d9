"""C++ source of the fused CPU selective scan and causal depthwise conv1d (compiled on first use by :mod:`._cpu_kernel`).

Kept as a Python string (like ``torch.utils.cpp_extension.load_inline``) so that it ships with the
package without package-data configuration. Plain C ABI, no torch headers: it compiles in about a
second and is called through ``ctypes`` with raw data pointers.

Layout (all contiguous, batch-major as the mixer holds them): ``u, delta, z, y: [B, L, D]``;
``At = A^T: [N, D]``; ``Bm, Cm: [B, L, N]``; ``Dv: [D]``. ``delta`` is the final step size (bias and
softplus already applied). Computes ``y = (C_t . h_t + D u_t) * silu(z_t)`` with
``h_t = exp(delta_t A) * h_{t-1} + delta_t u_t B_t``, ``h_{-1} = 0``.

Work is split into (sequence, tile of ``W`` channels) units; a unit's state ``[N, W]`` stays in L1 and
the inner loops run over the ``W`` contiguous channels (auto-vectorised; ``vexp`` is a branch-free
polynomial exp so that the loop containing it vectorises). The backward recomputes the unit's states
``h_0..h_L`` into a per-thread buffer ``[(L+1), N, W]`` and then runs the reverse recurrence; nothing
but the inputs is saved between forward and backward. Parallel (OpenMP) over sequences; the
parameter gradients (dA, dD) are accumulated in per-thread buffers and summed at the end.

The depthwise causal conv1d (+ SiLU) reads a channel slice of a wider ``[B, T, *]`` tensor through
its row stride (the ``x`` half of ``in_proj``'s output, no copy) and writes a contiguous ``[B, T, D]``;
its backward recomputes the pre-activation.
"""

SOURCE = r"""
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#define RESTRICT __restrict__

// exp(x): Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, Taylor polynomial, 2^k via exponent bits.
// Relative error ~1e-7 (float, degree 7) / ~1e-16 (double, degree 13). Returns 0 below the normal
// range and +inf above it (as the reference's exp up to denormals).
static inline float vexp(float x) {
    const float lo = -87.3365f, hi = 88.7228f;
    float xc = x < lo ? lo : (x > 88.0f ? 88.0f : x);
    float k = std::floor(xc * 1.44269504088896341f + 0.5f);
    float r = xc - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float s;
    std::memcpy(&s, &bits, sizeof(s));
    float res = p * s;
    res = x < lo ? 0.0f : res;
    return x > hi ? INFINITY : res;
}

static inline double vexp(double x) {
    const double lo = -708.39, hi = 709.78;
    double xc = x < lo ? lo : (x > 709.0 ? 709.0 : x);
    double k = std::floor(xc * 1.4426950408889634074 + 0.5);
    double r = xc - k * 6.93147180369123816490e-01;
    r = r - k * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;   // 1/13!
    p = p * r + 1.0 / 479001600.0;   // 1/12!
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t bits = ((int64_t)k + 1023) << 52;
    double s;
    std::memcpy(&s, &bits, sizeof(s));
    double res = p * s;
    res = x < lo ? 0.0 : res;
    return x > hi ? (double)INFINITY : res;
}

template <typename T>
static void scan_fwd(const T* RESTRICT u, const T* RESTRICT delta, const T* RESTRICT At,
                     const T* RESTRICT Bm, const T* RESTRICT Cm, const T* RESTRICT Dv,
                     const T* RESTRICT z, T* RESTRICT y, int64_t Bsz, int64_t L, int64_t Dn,
                     int64_t N, int64_t W, int nthreads) {
    const int64_t ntile = (Dn + W - 1) / W;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        std::vector<T> hbuf(N * W), xbuf(W), ybuf(W);
        T* RESTRICT h = hbuf.data();
        T* RESTRICT xv = xbuf.data();
        T* RESTRICT yv = ybuf.data();
#pragma omp for schedule(static)
        for (int64_t b = 0; b < Bsz; ++b) {
            for (int64_t tile = 0; tile < ntile; ++tile) {
                const int64_t d0 = tile * W;
                const int64_t nw = (Dn - d0) < W ? (Dn - d0) : W;
                std::memset(h, 0, sizeof(T) * N * W);
                for (int64_t t = 0; t < L; ++t) {
                    const int64_t row = (b * L + t) * Dn + d0;
                    const T* RESTRICT ur = u + row;
                    const T* RESTRICT dr = delta + row;
                    const T* RESTRICT Bt = Bm + (b * L + t) * N;
                    const T* RESTRICT Ct = Cm + (b * L + t) * N;
                    for (int64_t w = 0; w < nw; ++w) { xv[w] = dr[w] * ur[w]; yv[w] = 0; }
                    for (int64_t n = 0; n < N; ++n) {
                        const T bn = Bt[n], cn = Ct[n];
                        const T* RESTRICT An = At + n * Dn + d0;
                        T* RESTRICT hn = h + n * W;
                        for (int64_t w = 0; w < nw; ++w) {
                            const T hv = vexp(dr[w] * An[w]) * hn[w] + xv[w] * bn;
                            hn[w] = hv;
                            yv[w] += cn * hv;
                        }
                    }
                    T* RESTRICT yr = y + row;
                    const T* RESTRICT zr = z ? z + row : nullptr;
                    for (int64_t w = 0; w < nw; ++w) {
                        T v = yv[w];
                        if (Dv) v += Dv[d0 + w] * ur[w];
                        if (zr) v *= zr[w] / (T(1) + vexp(-zr[w]));
                        yr[w] = v;
                    }
                }
            }
        }
    }
}

// One sequence b of the backward (all channel tiles); outside the OpenMP region so that GCC
// vectorises its loops (in the outlined parallel body it does not: "no vectype for stmt").
template <typename T>
__attribute__((noinline)) static void bwd_seq(
        const T* RESTRICT u, const T* RESTRICT delta, const T* RESTRICT At,
        const T* RESTRICT Bm, const T* RESTRICT Cm, const T* RESTRICT Dv,
        const T* RESTRICT z, const T* RESTRICT dout, T* RESTRICT du, T* RESTRICT ddelta,
        T* RESTRICT dB, T* RESTRICT dC, T* RESTRICT dz, T* RESTRICT myA, T* RESTRICT myD,
        T* RESTRICT H, T* RESTRICT E, T* RESTRICT g, T* RESTRICT wbuf,
        int64_t b, int64_t L, int64_t Dn, int64_t N, int64_t W) {
    const int64_t ntile = (Dn + W - 1) / W;
    T* RESTRICT xv = wbuf;
    T* RESTRICT dy = xv + W;
    T* RESTRICT ys = dy + W;
    T* RESTRICT dx = ys + W;
    T* RESTRICT ddl = dx + W;
    T* RESTRICT sz = ddl + W;
    T* RESTRICT dsz = sz + W;
    T* RESTRICT gt = dsz + W;
    for (int64_t tile = 0; tile < ntile; ++tile) {
        const int64_t d0 = tile * W;
        const int64_t nw = (Dn - d0) < W ? (Dn - d0) : W;
        const int64_t NW = N * W;
        // 1. states h_t (H[t + 1]), h_{-1} = 0 (H[0])
        std::memset(H, 0, sizeof(T) * NW);
        for (int64_t t = 0; t < L; ++t) {
            const int64_t row = (b * L + t) * Dn + d0;
            const T* RESTRICT ur = u + row;
            const T* RESTRICT dr = delta + row;
            const T* RESTRICT Bt = Bm + (b * L + t) * N;
            const T* RESTRICT Hp = H + t * NW;
            T* RESTRICT Hc = H + (t + 1) * NW;
            for (int64_t w = 0; w < nw; ++w) xv[w] = dr[w] * ur[w];
            T* RESTRICT Et = E + t * NW;
            for (int64_t n = 0; n < N; ++n) {
                const T bn = Bt[n];
                const T* RESTRICT An = At + n * Dn + d0;
                for (int64_t w = 0; w < nw; ++w) {
                    const T dA = vexp(dr[w] * An[w]);
                    Et[n * W + w] = dA;  // exp(delta_t A), reused by the reverse pass
                    Hc[n * W + w] = dA * Hp[n * W + w] + xv[w] * bn;
                }
            }
        }
        // 2. reverse recurrence; g = dL/dh_t from later steps
        std::memset(g, 0, sizeof(T) * NW);
        for (int64_t t = L - 1; t >= 0; --t) {
            const int64_t row = (b * L + t) * Dn + d0;
            const T* RESTRICT ur = u + row;
            const T* RESTRICT dr = delta + row;
            const T* RESTRICT gr = dout + row;
            const T* RESTRICT zr = z ? z + row : nullptr;
            const T* RESTRICT Bt = Bm + (b * L + t) * N;
            const T* RESTRICT Ct = Cm + (b * L + t) * N;
            T* RESTRICT dBt = dB + (b * L + t) * N;
            T* RESTRICT dCt = dC + (b * L + t) * N;
            const T* RESTRICT Hc = H + (t + 1) * NW;
            const T* RESTRICT Hp = H + t * NW;
            for (int64_t w = 0; w < nw; ++w) {
                xv[w] = dr[w] * ur[w];
                ys[w] = 0; dx[w] = 0; ddl[w] = 0;
            }
            if (zr) {
                for (int64_t w = 0; w < nw; ++w) {
                    const T sg = T(1) / (T(1) + vexp(-zr[w]));
                    sz[w] = zr[w] * sg;
                    dsz[w] = sg * (T(1) + zr[w] * (T(1) - sg));
                    dy[w] = gr[w] * sz[w];
                }
            } else {
                for (int64_t w = 0; w < nw; ++w) dy[w] = gr[w];
            }
            for (int64_t n = 0; n < N; ++n) {
                const T bn = Bt[n], cn = Ct[n];
                const T* RESTRICT An = At + n * Dn + d0;
                T* RESTRICT mA = myA + n * Dn + d0;
                T* RESTRICT gn = g + n * W;
                const T* RESTRICT hc = Hc + n * W;
                const T* RESTRICT hp = Hp + n * W;
                const T* RESTRICT en = E + t * NW + n * W;
                for (int64_t w = 0; w < nw; ++w) {
                    const T gg = gn[w] + dy[w] * cn;
                    ys[w] += cn * hc[w];
                    dx[w] += gg * bn;
                    const T a = An[w];
                    const T dA = en[w];
                    const T m = gg * dA * hp[w];
                    ddl[w] += m * a;
                    mA[w] += m * dr[w];
                    gt[w] = gg;
                    gn[w] = gg * dA;
                }
                T sC = 0, sB = 0;  // separate loops: reductions vectorise on their own
                for (int64_t w = 0; w < nw; ++w) sC += dy[w] * hc[w];
                for (int64_t w = 0; w < nw; ++w) sB += gt[w] * xv[w];
                dCt[n] += sC;
                dBt[n] += sB;
            }
            T* RESTRICT dur = du + row;
            T* RESTRICT ddr = ddelta + row;
            for (int64_t w = 0; w < nw; ++w) {
                ddr[w] = ddl[w] + dx[w] * ur[w];
                T g_u = dx[w] * dr[w];
                if (Dv) {
                    g_u += dy[w] * Dv[d0 + w];
                    myD[d0 + w] += dy[w] * ur[w];
                }
                dur[w] = g_u;
            }
            if (zr) {
                T* RESTRICT dzr = dz + row;
                for (int64_t w = 0; w < nw; ++w) {
                    T v = ys[w];
                    if (Dv) v += Dv[d0 + w] * ur[w];
                    dzr[w] = gr[w] * v * dsz[w];
                }
            }
        }
    }
}

template <typename T>
static void scan_bwd(const T* RESTRICT u, const T* RESTRICT delta, const T* RESTRICT At,
                     const T* RESTRICT Bm, const T* RESTRICT Cm, const T* RESTRICT Dv,
                     const T* RESTRICT z, const T* RESTRICT dout,
                     T* RESTRICT du, T* RESTRICT ddelta, T* RESTRICT dAt, T* RESTRICT dB,
                     T* RESTRICT dC, T* RESTRICT dD, T* RESTRICT dz,
                     int64_t Bsz, int64_t L, int64_t Dn, int64_t N, int64_t W, int nthreads) {
    const int64_t ntile = (Dn + W - 1) / W;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > Bsz) nthreads = (int)Bsz;
    // per-thread partial sums of the parameter gradients
    std::vector<T> pA((size_t)nthreads * N * Dn, T(0)), pD((size_t)nthreads * Dn, T(0));
    std::memset(dB, 0, sizeof(T) * Bsz * L * N);
    std::memset(dC, 0, sizeof(T) * Bsz * L * N);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        std::vector<T> Hbuf((L + 1) * N * W), Ebuf(L * N * W), gbuf(N * W), wbuf(9 * W);
        T* RESTRICT myA = pA.data() + (size_t)tid * N * Dn;
        T* RESTRICT myD = pD.data() + (size_t)tid * Dn;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < Bsz; ++b)
            bwd_seq<T>(u, delta, At, Bm, Cm, Dv, z, dout, du, ddelta, dB, dC, dz, myA, myD,
                       Hbuf.data(), Ebuf.data(), gbuf.data(), wbuf.data(), b, L, Dn, N, W);
    }
    for (int64_t i = 0; i < N * Dn; ++i) {
        T s = 0;
        for (int k = 0; k < nthreads; ++k) s += pA[(size_t)k * N * Dn + i];
        dAt[i] = s;
    }
    if (dD) {
        for (int64_t i = 0; i < Dn; ++i) {
            T s = 0;
            for (int k = 0; k < nthreads; ++k) s += pD[(size_t)k * Dn + i];
            dD[i] = s;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Depthwise causal conv1d (+ optional SiLU), batch-major: x [B, T, D] with row stride xs (so a
// channel slice of a wider tensor needs no copy), wt = weight^T [K, D], bias [D]; out [B, T, D].
// out[b, t, d] = act(bias[d] + sum_k wt[k, d] x[b, t - K + 1 + k, d])  (zero left padding)
// ---------------------------------------------------------------------------------------------
template <typename T>
__attribute__((noinline)) static void conv_fwd_seq(
        const T* RESTRICT x, int64_t xs, const T* RESTRICT wt, const T* RESTRICT bias,
        T* RESTRICT out, T* RESTRICT acc, int64_t b, int64_t Tn, int64_t Dn, int64_t K, int silu) {
    for (int64_t t = 0; t < Tn; ++t) {
        for (int64_t d = 0; d < Dn; ++d) acc[d] = bias ? bias[d] : T(0);
        for (int64_t k = 0; k < K; ++k) {
            const int64_t s = t - K + 1 + k;
            if (s < 0) continue;
            const T* RESTRICT xr = x + (b * Tn + s) * xs;
            const T* RESTRICT wk = wt + k * Dn;
            for (int64_t d = 0; d < Dn; ++d) acc[d] += wk[d] * xr[d];
        }
        T* RESTRICT o = out + (b * Tn + t) * Dn;
        if (silu) {
            for (int64_t d = 0; d < Dn; ++d) o[d] = acc[d] / (T(1) + vexp(-acc[d]));
        } else {
            for (int64_t d = 0; d < Dn; ++d) o[d] = acc[d];
        }
    }
}

template <typename T>
__attribute__((noinline)) static void conv_bwd_seq(
        const T* RESTRICT x, int64_t xs, const T* RESTRICT wt, const T* RESTRICT bias,
        const T* RESTRICT dout, T* RESTRICT dx, T* RESTRICT mydw, T* RESTRICT mydb,
        T* RESTRICT acc, int64_t b, int64_t Tn, int64_t Dn, int64_t K, int silu) {
    std::memset(dx + b * Tn * Dn, 0, sizeof(T) * Tn * Dn);
    for (int64_t t = 0; t < Tn; ++t) {
        const T* RESTRICT g = dout + (b * Tn + t) * Dn;
        if (silu) {
            for (int64_t d = 0; d < Dn; ++d) acc[d] = bias ? bias[d] : T(0);
            for (int64_t k = 0; k < K; ++k) {
                const int64_t s = t - K + 1 + k;
                if (s < 0) continue;
                const T* RESTRICT xr = x + (b * Tn + s) * xs;
                const T* RESTRICT wk = wt + k * Dn;
                for (int64_t d = 0; d < Dn; ++d) acc[d] += wk[d] * xr[d];
            }
            for (int64_t d = 0; d < Dn; ++d) {
                const T sg = T(1) / (T(1) + vexp(-acc[d]));
                acc[d] = g[d] * sg * (T(1) + acc[d] * (T(1) - sg));  // now dL/d(pre-activation)
            }
        } else {
            for (int64_t d = 0; d < Dn; ++d) acc[d] = g[d];
        }
        for (int64_t d = 0; d < Dn; ++d) mydb[d] += acc[d];
        for (int64_t k = 0; k < K; ++k) {
            const int64_t s = t - K + 1 + k;
            if (s < 0) continue;
            const T* RESTRICT xr = x + (b * Tn + s) * xs;
            const T* RESTRICT wk = wt + k * Dn;
            T* RESTRICT dwk = mydw + k * Dn;
            T* RESTRICT dxr = dx + (b * Tn + s) * Dn;
            for (int64_t d = 0; d < Dn; ++d) {
                dwk[d] += acc[d] * xr[d];
                dxr[d] += wk[d] * acc[d];
            }
        }
    }
}

template <typename T>
static void conv_fwd(const T* x, int64_t xs, const T* wt, const T* bias, T* out, int64_t Bsz,
                     int64_t Tn, int64_t Dn, int64_t K, int silu, int nthreads) {
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        std::vector<T> acc(Dn);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < Bsz; ++b) conv_fwd_seq<T>(x, xs, wt, bias, out, acc.data(), b, Tn, Dn, K, silu);
    }
}

template <typename T>
static void conv_bwd(const T* x, int64_t xs, const T* wt, const T* bias, const T* dout, T* dx,
                     T* dwt, T* db, int64_t Bsz, int64_t Tn, int64_t Dn, int64_t K, int silu,
                     int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > Bsz) nthreads = (int)Bsz;
    std::vector<T> pw((size_t)nthreads * K * Dn, T(0)), pb((size_t)nthreads * Dn, T(0));
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        std::vector<T> acc(Dn);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < Bsz; ++b)
            conv_bwd_seq<T>(x, xs, wt, bias, dout, dx, pw.data() + (size_t)tid * K * Dn,
                            pb.data() + (size_t)tid * Dn, acc.data(), b, Tn, Dn, K, silu);
    }
    for (int64_t i = 0; i < K * Dn; ++i) {
        T s = 0;
        for (int k = 0; k < nthreads; ++k) s += pw[(size_t)k * K * Dn + i];
        dwt[i] = s;
    }
    if (db) {
        for (int64_t i = 0; i < Dn; ++i) {
            T s = 0;
            for (int k = 0; k < nthreads; ++k) s += pb[(size_t)k * Dn + i];
            db[i] = s;
        }
    }
}

extern "C" {
int ss_abi_version() { return 2; }
#define DEFINE(T, SFX)                                                                            \
void ss_fwd_##SFX(const T* u, const T* delta, const T* At, const T* Bm, const T* Cm, const T* Dv,\
                  const T* z, T* y, int64_t Bsz, int64_t L, int64_t Dn, int64_t N, int64_t W,    \
                  int nthreads) {                                                                 \
    scan_fwd<T>(u, delta, At, Bm, Cm, Dv, z, y, Bsz, L, Dn, N, W, nthreads);                      \
}                                                                                                 \
void ss_bwd_##SFX(const T* u, const T* delta, const T* At, const T* Bm, const T* Cm, const T* Dv,\
                  const T* z, const T* dout, T* du, T* ddelta, T* dAt, T* dB, T* dC, T* dD,      \
                  T* dz, int64_t Bsz, int64_t L, int64_t Dn, int64_t N, int64_t W, int nthreads) {\
    scan_bwd<T>(u, delta, At, Bm, Cm, Dv, z, dout, du, ddelta, dAt, dB, dC, dD, dz,               \
                Bsz, L, Dn, N, W, nthreads);                                                      \
}
DEFINE(float, f32)
DEFINE(double, f64)
#define DEFINE_CONV(T, SFX)                                                                       \
void conv_fwd_##SFX(const T* x, int64_t xs, const T* wt, const T* bias, T* out, int64_t Bsz,     \
                    int64_t Tn, int64_t Dn, int64_t K, int silu, int nthreads) {                  \
    conv_fwd<T>(x, xs, wt, bias, out, Bsz, Tn, Dn, K, silu, nthreads);                            \
}                                                                                                 \
void conv_bwd_##SFX(const T* x, int64_t xs, const T* wt, const T* bias, const T* dout, T* dx,    \
                    T* dwt, T* db, int64_t Bsz, int64_t Tn, int64_t Dn, int64_t K, int silu,      \
                    int nthreads) {                                                               \
    conv_bwd<T>(x, xs, wt, bias, dout, dx, dwt, db, Bsz, Tn, Dn, K, silu, nthreads);              \
}
DEFINE_CONV(float, f32)
DEFINE_CONV(double, f64)
}
"""
