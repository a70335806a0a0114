/* Fused CPU kernels of the analog forward and its gradients, and of quantized inference
   (cimkit.native builds and loads them).

   Each kernel does in one pass over memory what the PyTorch route does in several elementwise
   passes, with the same float32 operations in the same order, so both routes give bit-identical
   results (tests/test_native.py):

   dac_rows      per-row abs-max DAC range and codes:
                   r_i = max(max_j |x_ij|, 1e-12)   (NaN when the row holds a NaN)
                   q_ij = rint(x_ij * ((1 / r_i) * L))
   adc_rows      ADC and digital epilogue of T row tiles (T = 1: in place on z):
                   c_tij = rint(clamp(fma(noise_tij, sigma, z_tij), -La, La))   (no noise: z_tij)
                   y_ij  = fmaf(sum_t c_tij * k_tj, s_i, b_j)                    (no bias: (...) * s_i)

   adc_codes     the training ADC, in place:  c = rint(clamp(fma(noise, sigma, z), -La, La)); returns
                 whether any code is at full scale (|c| == La)
   col_scale     the digital factor f_bn = (r_b * k_n) * inv_gain applied to codes c (B, N, S):
                 mode 0: c * f;  1: (c * f) + b_n;  2: fmaf(c, f, b_n);  3 (a gradient through the
                 ADC's straight-through estimator): (|code| < La ? c : 0) * f
   row_scale     the DAC codes' gradient:  g_ij * ((1 / r_i) * L)
   adc_scale     adc_codes then col_scale mode 1 (mode 0 without a bias) in one pass (a linear layer)
   train_weights the training forward's weights of a linear layer, per output channel n:
                   ws_tn = max(max_r |w_n,tR+r|, 1e-30);  u = w / ws;  A = u (no noise) or
                   s = (std * max_t,r |w_n|) / ws;  A = u + (fma(noise, s, u) - u);  out = A * c
   weight_grad   its gradient back to the weight's layout: (g * c) / ws
   tiles_adc     the training ADC of two row tiles (range r_adc):  v = fma(noise, alpha, z);
                   y = sum_t (rint(clamp(v_t * l_r, -La, La)) * r_l) * (ws_t * r_b) (+ b)
                 and its gradient (tiles_adc_grad): g * (ws_t * r_b) where -rf < v < rf, else 0
   read_pairs    one read of programmed conductances with read noise, to normalised weights A:
                   g_sdj = max(fma(sigma_sdj, noise_sdj, mean_sdj), 0)
                   A_sj  = ((g_s0j - g_s1j) * inv) * post   (a differential pair; one device: g_s0j)
                 (post = 1 leaves the product unchanged: x * 1 is exact)
   device_read_a/b/c  the three elementwise stages of a freshly programmed device's read (hardware-
                 aware training's device noise), between which PyTorch takes the logarithms and the
                 exponentials (cimkit.analog.devices._read_stages):
                   A  g = max(fma(max(poly(g_t), 0), z0, g_t), 0); lq = max(g, q_floor); ld = max(g_t, d_floor)
                   B  lq = lq * -e;  ld = |fma(clamp(ld s1 + s0), z1, clamp(ld m1 + m0))| * -k
                   C  g = g * ld; sigma = min(lq, cap) * g (or std); g = max(fma(v * sigma, z2, g), 0)
                 (PyTorch's float32 sqrt is not always correctly rounded, so a 1/f read noise added in
                 quadrature to a constant one stays on the tensor route)

   fake_quant    quantized inference with one scale s and zero point z:
                   y = clamp(rint(x / s), qmin, qmax) * s   (z = 0)
                   y = (clamp(rint(x / s) + z, qmin, qmax) - z) * s

   rint is round-half-to-even, as torch.round. No -ffast-math (-fno-trapping-math changes no value)
   and -ffp-contract=off: the only fused multiply-adds are the explicit fmaf, as in PyTorch's
   vectorized add(alpha=) and addcmul. Two builds of every loop, chosen once at load: AVX2+FMA, and
   baseline x86-64 (SSE2) for other CPUs; both give the same bits. Rows are split over up to
   `threads` POSIX threads (row results do not depend on the split). */

#include <math.h>
#include <pthread.h>
#include <stdint.h>

typedef struct {
    const float *x; float *q; float *r; int64_t cols; float levels;
    const float *z; const float *noise; float *y; const float *k; const float *s; const float *b;
    int64_t rows, tiles; float sigma, adc_levels; int has_noise, has_adc;
    const float *gm, *gs; float *a; int64_t devs; float inv, post;
    int64_t inner, r_stride; int mode; const float *codes; int *saturated;
    const struct dev_args *dv;
    float scale, qmin, qmax, zp;
} args_t;

/* the device-read stages (flat tensors of n conductances; NULL planes are absent) */
typedef struct dev_args {
    const float *gt, *z0, *z1, *z2; float *g, *lq, *ld, *mu;
    float c[8]; int nc; /* programming-noise std: c[0] + c[1] g + ... (Horner, as the tensor ops) */
    float q_floor, d_floor, neg_e, m1, m0, m_lo, m_hi, s1, s0, s_lo, s_hi, neg_k;
    float cap, value, std; int has_q, read; /* k[14] is unused (see cimkit_device_read) */
} dev_args_t;

typedef void (*body_t)(const args_t *, int64_t, int64_t);

/* ------------------------------------------------------------------ loop bodies (inlined twice) */

static inline __attribute__((always_inline)) void dac_body(const args_t *a, int64_t r0, int64_t r1) {
    const int64_t n = a->cols;
    for (int64_t i = r0; i < r1; ++i) {
        const float *x = a->x + i * n;
        float *q = a->q + i * n;
        /* max |x| on the bit patterns: for non-negative floats the integer order is the float
           order, and a NaN (exponent all ones, mantissa non-zero) sorts above inf */
        const uint32_t *xb = (const uint32_t *)x;
        int32_t mb = 0;
        for (int64_t j = 0; j < n; ++j) {
            const int32_t v = (int32_t)(xb[j] & 0x7fffffffu);
            mb = v > mb ? v : mb;
        }
        union { int32_t i; float f; } u = {mb};
        float m = u.f;
        m = m < 1e-12f ? 1e-12f : m; /* a NaN stays NaN */
        a->r[i] = m;
        const float sc = (1.0f / m) * a->levels;
        for (int64_t j = 0; j < n; ++j) q[j] = rintf(x[j] * sc);
    }
}

static inline __attribute__((always_inline)) void scale_body(const args_t *a, int64_t r0, int64_t r1) {
    const int64_t n = a->cols;
    for (int64_t i = r0; i < r1; ++i) {
        const float sc = (1.0f / a->r[i]) * a->levels;
        if (a->x == a->q) {
            float *restrict y = a->q + i * n;
            for (int64_t j = 0; j < n; ++j) y[j] = y[j] * sc;
        } else {
            const float *restrict g = a->x + i * n;
            float *restrict y = a->q + i * n;
            for (int64_t j = 0; j < n; ++j) y[j] = g[j] * sc;
        }
    }
}

static inline __attribute__((always_inline)) float adc_code(float v, float nz, const args_t *a) {
    if (a->has_noise) v = fmaf(nz, a->sigma, v);
    if (a->has_adc) {
        v = v < -a->adc_levels ? -a->adc_levels : v;  /* clamp as torch.clamp: NaN passes */
        v = v > a->adc_levels ? a->adc_levels : v;
        v = rintf(v);
    }
    return v;
}

/* one tile of one row: y = code(src, nz) * k (t == 0) or y + code(src, nz) * k; `src` is `y` itself
   for the in-place case (then written through one pointer, so the loop vectorizes) */
static inline __attribute__((always_inline)) void adc_tile(float *restrict y, const float *src,
                                                           const float *restrict nz, const float *restrict k,
                                                           int64_t n, int first, const args_t *a) {
    if (src == y) {
        if (nz) { for (int64_t j = 0; j < n; ++j) y[j] = adc_code(y[j], nz[j], a) * k[j]; }
        else { for (int64_t j = 0; j < n; ++j) y[j] = adc_code(y[j], 0.0f, a) * k[j]; }
    } else if (first) {
        const float *restrict z = src;
        if (nz) { for (int64_t j = 0; j < n; ++j) y[j] = adc_code(z[j], nz[j], a) * k[j]; }
        else { for (int64_t j = 0; j < n; ++j) y[j] = adc_code(z[j], 0.0f, a) * k[j]; }
    } else {
        const float *restrict z = src;
        if (nz) { for (int64_t j = 0; j < n; ++j) y[j] = y[j] + adc_code(z[j], nz[j], a) * k[j]; }
        else { for (int64_t j = 0; j < n; ++j) y[j] = y[j] + adc_code(z[j], 0.0f, a) * k[j]; }
    }
}

static inline __attribute__((always_inline)) void adc_body(const args_t *a, int64_t r0, int64_t r1) {
    const int64_t n = a->cols, plane = a->rows * n;
    for (int64_t i = r0; i < r1; ++i) {
        float *restrict y = a->y + i * n;
        const float si = a->s[i];
        for (int64_t t = 0; t < a->tiles; ++t) {
            const int64_t off = t * plane + i * n;
            adc_tile(y, a->z + off, a->noise ? a->noise + off : NULL, a->k + t * n, n, t == 0, a);
        }
        const float *restrict b = a->b;
        if (b) {
            for (int64_t j = 0; j < n; ++j) y[j] = fmaf(y[j], si, b[j]);
        } else {
            for (int64_t j = 0; j < n; ++j) y[j] = y[j] * si;
        }
    }
}

static inline __attribute__((always_inline)) float g_read(float mean, float sigma, float nz) {
    const float g = fmaf(sigma, nz, mean);
    return g < 0.0f ? 0.0f : g; /* clamp(min=0) as torch: NaN passes */
}

static inline __attribute__((always_inline)) void read_one(float *restrict a, const float *restrict gm,
                                                           const float *restrict gs, const float *restrict nz,
                                                           int64_t m, float inv, float post) {
    for (int64_t j = 0; j < m; ++j) a[j] = (g_read(gm[j], gs[j], nz[j]) * inv) * post;
}

static inline __attribute__((always_inline)) void read_two(float *restrict a, const float *restrict gm,
                                                           const float *restrict gs, const float *restrict nz,
                                                           int64_t m, float inv, float post) {
    for (int64_t j = 0; j < m; ++j) {
        const float gp = g_read(gm[j], gs[j], nz[j]);
        const float gn = g_read(gm[m + j], gs[m + j], nz[m + j]);
        a[j] = ((gp - gn) * inv) * post;
    }
}

/* rows = weight slices s; one slice is `devs` blocks of `cols` conductances */
static inline __attribute__((always_inline)) void read_body(const args_t *r, int64_t r0, int64_t r1) {
    const int64_t m = r->cols;
    for (int64_t s = r0; s < r1; ++s) {
        const int64_t o = s * r->devs * m;
        if (r->devs == 2) read_two(r->a + s * m, r->gm + o, r->gs + o, r->noise + o, m, r->inv, r->post);
        else read_one(r->a + s * m, r->gm + o, r->gs + o, r->noise + o, m, r->inv, r->post);
    }
}

/* the training ADC of one value (adc_code with its options as arguments, so loops vectorize) */
static inline __attribute__((always_inline)) float train_code(float z, const float *nz, int64_t j, float sigma,
                                                              float L) {
    float v = nz ? fmaf(nz[j], sigma, z) : z;
    v = v < -L ? -L : v; /* clamp as torch.clamp: NaN passes */
    v = v > L ? L : v;
    return rintf(v);
}

/* a code at full scale (|code| == L: after the clamp nothing is beyond it, and a NaN never counts),
   compared on the bit patterns so the loop vectorizes */
static inline __attribute__((always_inline)) int32_t full_scale(float v, int32_t l_bits) {
    union { float f; int32_t i; } u = {v};
    return (u.i & 0x7fffffff) == l_bits;
}

/* one row of codes in place (a row is a block of `cols` elements); returns whether one is at full scale */
static inline __attribute__((always_inline)) int codes_row(float *restrict z, const float *restrict nz, int64_t n,
                                                           float sigma, float L, int32_t l_bits) {
    int32_t sat = 0;
    for (int64_t j = 0; j < n; ++j) {
        const float v = train_code(z[j], nz, j, sigma, L);
        z[j] = v;
        sat |= full_scale(v, l_bits);
    }
    return sat;
}

static inline __attribute__((always_inline)) void codes_body(const args_t *a, int64_t r0, int64_t r1) {
    const float L = a->adc_levels, sigma = a->sigma;
    const int64_t n = a->cols;
    union { float f; int32_t i; } lb = {L};
    int sat = 0;
    for (int64_t i = r0; i < r1; ++i) {
        float *z = a->q + i * n;
        sat |= a->noise ? codes_row(z, a->noise + i * n, n, sigma, L, lb.i) : codes_row(z, NULL, n, sigma, L, lb.i);
    }
    if (sat) __atomic_store_n(a->saturated, 1, __ATOMIC_RELAXED);
}

/* col_scale's four modes on one value c with factor f (module comment) */
static inline __attribute__((always_inline)) float col_op(float c, float f, float bn, float code, float L, int mode) {
    if (mode == 0) return c * f;
    if (mode == 1) return c * f + bn;
    if (mode == 2) return fmaf(c, f, bn);
    return ((code > -L && code < L) ? c : 0.0f) * f;
}

/* rows = (b, n) pairs; a row is the `inner` spatial elements of one output channel. In place
   (c == y) the loop goes through one pointer, so it vectorizes without an aliasing check. */
static inline __attribute__((always_inline)) void cols_body(const args_t *a, int64_t r0, int64_t r1) {
    const int64_t s = a->inner, nc = a->cols;
    const float L = a->adc_levels;
    const int mode = a->mode;
    for (int64_t i = r0; i < r1; ++i) {
        const int64_t b = i / nc, n = i - b * nc;
        const float f = (a->r[b * a->r_stride] * a->k[n]) * a->inv;
        const float bn = a->b ? a->b[n] : 0.0f;
        const float *code = a->codes ? a->codes + i * s : a->x + i * s;  /* read in mode 3 only */
        float *restrict y = a->q + i * s;
        if (a->x == a->q) {
            for (int64_t j = 0; j < s; ++j) y[j] = col_op(y[j], f, bn, code[j], L, mode);
        } else {
            const float *restrict c = a->x + i * s;
            for (int64_t j = 0; j < s; ++j) y[j] = col_op(c[j], f, bn, code[j], L, mode);
        }
    }
}

/* no spatial dims (a linear layer): rows = samples b, f_n = (r_b * k_n) * inv along the row */
static inline __attribute__((always_inline)) void lin_body(const args_t *a, int64_t r0, int64_t r1) {
    const int64_t n = a->cols;
    const float L = a->adc_levels, inv = a->inv;
    const int mode = a->mode;
    const float *restrict k = a->k;
    for (int64_t b = r0; b < r1; ++b) {
        const float rb = a->r[b * a->r_stride];
        const float *code = a->codes ? a->codes + b * n : a->x + b * n;  /* read in mode 3 only */
        const float *restrict bias = a->b ? a->b : k;  /* read in modes 1 and 2 only */
        float *restrict y = a->q + b * n;
        if (a->x == a->q) {
            for (int64_t j = 0; j < n; ++j) y[j] = col_op(y[j], (rb * k[j]) * inv, bias[j], code[j], L, mode);
        } else {
            const float *restrict c = a->x + b * n;
            for (int64_t j = 0; j < n; ++j) y[j] = col_op(c[j], (rb * k[j]) * inv, bias[j], code[j], L, mode);
        }
    }
}


/* ------------------------------------------------------------------ device read stages */

static inline __attribute__((always_inline)) float clamp_lo(float v, float lo) { return v < lo ? lo : v; }
static inline __attribute__((always_inline)) float clamp_hi(float v, float hi) { return v > hi ? hi : v; }

#define DEV_CHUNK 4096 /* elements per row of the row-parallel driver */

/* stage A with a polynomial of `nc` coefficients (a constant where inlined, so the loop unrolls
   Horner's rule and vectorizes) */
static inline __attribute__((always_inline)) void deva_n(const args_t *a, int64_t r0, int64_t r1, const int nc) {
    const dev_args_t *d = a->dv;
    const int64_t i0 = r0 * DEV_CHUNK, i1 = r1 * DEV_CHUNK < a->cols ? r1 * DEV_CHUNK : a->cols;
    const float *restrict gt = d->gt, *restrict z0 = d->z0;
    float *restrict g = d->g, *restrict lq = d->lq, *restrict ld = d->ld;
    float c[8];
    for (int k = 0; k < 8; ++k) c[k] = d->c[k];
    const float qf = d->q_floor, df = d->d_floor;
    for (int64_t i = i0; i < i1; ++i) {
        const float x = gt[i];
        float sp;
        if (nc <= 1) {
            sp = c[0];
        } else {
            sp = x * c[nc - 1] + c[nc - 2];
            for (int k = nc - 3; k >= 0; --k) sp = sp * x + c[k];
        }
        const float gi = clamp_lo(fmaf(clamp_lo(sp, 0.0f), z0[i], x), 0.0f);
        g[i] = gi;
        if (lq) lq[i] = clamp_lo(gi, qf);
        if (ld) ld[i] = clamp_lo(x, df);
    }
}

static inline __attribute__((always_inline)) void deva_body(const args_t *a, int64_t r0, int64_t r1) {
    switch (a->dv->nc) {
    case 1: deva_n(a, r0, r1, 1); break;
    case 2: deva_n(a, r0, r1, 2); break;
    case 3: deva_n(a, r0, r1, 3); break;
    case 4: deva_n(a, r0, r1, 4); break;
    default: deva_n(a, r0, r1, a->dv->nc); break;
    }
}

static inline __attribute__((always_inline)) void devb_body(const args_t *a, int64_t r0, int64_t r1) {
    const dev_args_t *d = a->dv;
    const int64_t i0 = r0 * DEV_CHUNK, i1 = r1 * DEV_CHUNK < a->cols ? r1 * DEV_CHUNK : a->cols;
    float *restrict lq = d->lq, *restrict ld = d->ld;
    const float *restrict z1 = d->z1;
    const float ne = d->neg_e, m1 = d->m1, m0 = d->m0, mlo = d->m_lo, mhi = d->m_hi;
    const float s1 = d->s1, s0 = d->s0, slo = d->s_lo, shi = d->s_hi, nk = d->neg_k;
    if (lq) for (int64_t i = i0; i < i1; ++i) lq[i] = lq[i] * ne;
    if (ld) {
        for (int64_t i = i0; i < i1; ++i) {
            const float l = ld[i];
            const float mu = clamp_hi(clamp_lo(l * m1 + m0, mlo), mhi);
            const float sg = clamp_hi(clamp_lo(l * s1 + s0, slo), shi);
            ld[i] = fabsf(fmaf(sg, z1[i], mu)) * nk;
        }
    }
}

static inline __attribute__((always_inline)) void devc_body(const args_t *a, int64_t r0, int64_t r1) {
    const dev_args_t *d = a->dv;
    const int64_t i0 = r0 * DEV_CHUNK, i1 = r1 * DEV_CHUNK < a->cols ? r1 * DEV_CHUNK : a->cols;
    float *restrict g = d->g;
    const float *restrict lq = d->lq, *restrict ld = d->ld, *restrict z2 = d->z2;
    const float cap = d->cap, value = d->value, std = d->std;
    const int read = d->read, has_q = d->has_q;
    for (int64_t i = i0; i < i1; ++i) {
        float gi = g[i];
        if (ld) gi = gi * ld[i]; /* drifted */
        if (read) {
            float sigma, v = value;
            if (has_q) {
                sigma = clamp_hi(lq[i], cap) * gi;
            } else {
                sigma = std;
                v = 1.0f;
            }
            gi = clamp_lo(fmaf(v * sigma, z2[i], gi), 0.0f);
        }
        g[i] = gi;
    }
}

/* ------------------------------------------------------------------ quantized inference */

static inline __attribute__((always_inline)) void fq_body(const args_t *a, int64_t r0, int64_t r1) {
    const int64_t i0 = r0 * DEV_CHUNK, i1 = r1 * DEV_CHUNK < a->cols ? r1 * DEV_CHUNK : a->cols;
    const float *restrict x = a->x;
    float *restrict y = a->q;
    const float s = a->scale, lo = a->qmin, hi = a->qmax, z = a->zp;
    if (z == 0.0f) {
        for (int64_t i = i0; i < i1; ++i) y[i] = clamp_hi(clamp_lo(rintf(x[i] / s), lo), hi) * s;
    } else {
        for (int64_t i = i0; i < i1; ++i) y[i] = (clamp_hi(clamp_lo(rintf(x[i] / s) + z, lo), hi) - z) * s;
    }
}

/* ------------------------------------------------------------------ the two builds */

/* ------------------------------------------------------------------ training weights */

/* one output channel n (a row of the weight, C = T * R inputs): column scales, then the matmul
   operand (see the top comment); the noise (T, R, N) is read with stride N */
static inline __attribute__((always_inline)) void wts_body(const args_t *a, int64_t r0, int64_t r1) {
    const int64_t T = a->tiles, R = a->inner, N = a->cols, C = T * R;
    const float c = a->scale, std = a->sigma;
    for (int64_t n = r0; n < r1; ++n) {
        const float *restrict w = a->x + n * C;
        float *restrict out = a->q + n * C;
        const uint32_t *wb = (const uint32_t *)w;
        int32_t ch = 0; /* max |w| of the channel on the bit patterns (a NaN sorts above inf) */
        for (int64_t t = 0; t < T; ++t) {
            int32_t mb = 0;
            for (int64_t r = 0; r < R; ++r) {
                const int32_t v = (int32_t)(wb[t * R + r] & 0x7fffffffu);
                mb = v > mb ? v : mb;
            }
            union { int32_t i; float f; } u = {mb};
            const float ws = u.f < 1e-30f ? 1e-30f : u.f; /* clamp(min=1e-30): a NaN stays NaN */
            a->r[t * N + n] = ws;
            ch = mb > ch ? mb : ch;
        }
        union { int32_t i; float f; } cu = {ch};
        for (int64_t t = 0; t < T; ++t) {
            const float ws = a->r[t * N + n];
            if (a->noise) {
                const float sg = (std * cu.f) / ws;
                const float *nz = a->noise + t * R * N + n;
                for (int64_t r = 0; r < R; ++r) {
                    const float v = w[t * R + r] / ws;
                    const float d = fmaf(nz[r * N], sg, v) - v;
                    out[t * R + r] = (v + d) * c;
                }
            } else {
                for (int64_t r = 0; r < R; ++r) out[t * R + r] = (w[t * R + r] / ws) * c;
            }
        }
    }
}

/* the training ADC of two row tiles, in place on z (T, B, N) -> the noisy partial sums, and y (B, N):
   v = fma(noise[b, t, n], alpha, z[t, b, n]); c = rint(clamp(v * l_r, -L, L)) * r_l;
   y = c_0 * f_0 + c_1 * f_1 (+ b_n), f_t = ws[t, n] * r[b] (the general route's tensor operations) */
static inline __attribute__((always_inline)) void tadc_body(const args_t *a, int64_t r0, int64_t r1) {
    const int64_t N = a->cols, B = a->rows;
    const float L = a->adc_levels, alpha = a->sigma, l_r = a->scale, r_l = a->inv;
    for (int64_t b = r0; b < r1; ++b) {
        float *restrict z0 = (float *)a->z + b * N, *restrict z1 = (float *)a->z + (B + b) * N;
        const float *restrict n0 = a->noise ? a->noise + (b * 2) * N : NULL;
        const float *restrict k0 = a->k, *restrict k1 = a->k + N;
        const float rb = a->r[b];
        float *restrict y = a->y + b * N;
        for (int64_t j = 0; j < N; ++j) {
            float v0 = z0[j], v1 = z1[j];
            if (n0) { v0 = fmaf(n0[j], alpha, v0); v1 = fmaf(n0[N + j], alpha, v1); }
            z0[j] = v0; z1[j] = v1;
            float c0 = v0 * l_r, c1 = v1 * l_r;
            c0 = c0 < -L ? -L : c0; c0 = c0 > L ? L : c0; /* clamp as torch.clamp: NaN passes */
            c1 = c1 < -L ? -L : c1; c1 = c1 > L ? L : c1;
            c0 = rintf(c0) * r_l; c1 = rintf(c1) * r_l;
            const float acc = c0 * (k0[j] * rb) + c1 * (k1[j] * rb);
            y[j] = a->b ? acc + a->b[j] : acc;
        }
    }
}

/* its gradient: gz[t, b, n] = (-rf < z[t, b, n] < rf) ? gy[b, n] * (ws[t, n] * r[b]) : 0 (T tiles) */
static inline __attribute__((always_inline)) void tadcg_body(const args_t *a, int64_t r0, int64_t r1) {
    const int64_t N = a->cols, B = a->rows;
    const float rf = a->sigma;
    for (int64_t i = r0; i < r1; ++i) { /* i = t * B + b */
        const int64_t t = i / B, b = i - t * B;
        const float *restrict z = a->z + i * N, *restrict g = a->x + b * N, *restrict k = a->k + t * N;
        const float rb = a->r[b];
        float *restrict out = a->q + i * N;
        for (int64_t j = 0; j < N; ++j) {
            const float gv = g[j] * (k[j] * rb);
            out[j] = (z[j] > -rf && z[j] < rf) ? gv : 0.0f;
        }
    }
}

/* the weight's gradient: gw[n, t R + r] = (ga[t, r, n] * c) / ws[t, n], ga with strides (st, sr, sn) */
static inline __attribute__((always_inline)) void wgrad_body(const args_t *a, int64_t r0, int64_t r1) {
    const int64_t T = a->tiles, R = a->inner, N = a->cols;
    const int64_t st = a->devs, sr = a->r_stride, sn = a->mode;
    const float c = a->scale;
    for (int64_t n = r0; n < r1; ++n) {
        float *restrict out = a->q + n * T * R;
        for (int64_t t = 0; t < T; ++t) {
            const float ws = a->k[t * N + n];
            const float *g = a->x + t * st + n * sn;
            if (sr == 1) { for (int64_t r = 0; r < R; ++r) out[t * R + r] = (g[r] * c) / ws; }
            else { for (int64_t r = 0; r < R; ++r) out[t * R + r] = (g[r * sr] * c) / ws; }
        }
    }
}

/* adc_codes and col_scale's mode 1 (mode 0 without a bias) of a linear layer in one pass: z (B, N)
   becomes the codes, y = code * f (+ b) with f_bn = (r_b * k_n) * inv; flags a full-scale code */
static inline __attribute__((always_inline)) void adcs_body(const args_t *a, int64_t r0, int64_t r1) {
    const int64_t n = a->cols;
    const float L = a->adc_levels, sigma = a->sigma, inv = a->inv;
    union { float f; int32_t i; } lb = {L};
    int sat = 0;
    for (int64_t i = r0; i < r1; ++i) {
        float *restrict z = a->q + i * n;
        float *restrict y = a->y + i * n;
        const float *restrict nz = a->noise ? a->noise + i * n : NULL;
        const float *restrict k = a->k, *restrict bias = a->b;
        const float rb = a->r[i * a->r_stride];
        int32_t s = 0;
        for (int64_t j = 0; j < n; ++j) {
            const float v = train_code(z[j], nz, j, sigma, L);
            z[j] = v;
            s |= full_scale(v, lb.i);
            const float p = v * ((rb * k[j]) * inv);
            y[j] = bias ? p + bias[j] : p;
        }
        sat |= s;
    }
    if (sat) __atomic_store_n(a->saturated, 1, __ATOMIC_RELAXED);
}

/* NAME_avx2 and NAME_base: the loop body NAME_body compiled for AVX2+FMA and for baseline x86-64 */
#define TWO_BUILDS(NAME)                                                                              \
    __attribute__((target("avx2,fma"))) static void NAME##_avx2(const args_t *a, int64_t r0, int64_t r1) { \
        NAME##_body(a, r0, r1);                                                                        \
    }                                                                                                  \
    static void NAME##_base(const args_t *a, int64_t r0, int64_t r1) { NAME##_body(a, r0, r1); }

TWO_BUILDS(dac)
TWO_BUILDS(adc)
TWO_BUILDS(read)
TWO_BUILDS(scale)
TWO_BUILDS(codes)
TWO_BUILDS(cols)
TWO_BUILDS(lin)
TWO_BUILDS(deva)
TWO_BUILDS(devb)
TWO_BUILDS(devc)
TWO_BUILDS(fq)
TWO_BUILDS(wts)
TWO_BUILDS(tadc)
TWO_BUILDS(tadcg)
TWO_BUILDS(wgrad)
TWO_BUILDS(adcs)

static int use_avx2 = -1; /* -1: not chosen yet; cimkit_force_isa overrides (tests) */

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int avx2(void) {
    if (use_avx2 < 0) use_avx2 = cpu_has_avx2();
    return use_avx2;
}

/* ------------------------------------------------------------------ row-parallel driver */

typedef struct { body_t f; const args_t *a; int64_t r0, r1; } job_t;

static void *run_job(void *p) {
    job_t *j = (job_t *)p;
    j->f(j->a, j->r0, j->r1);
    return NULL;
}

#define MAX_THREADS 64
#define MIN_ELEMS_PER_THREAD (1 << 16)

static void run_rows(body_t f, const args_t *a, int64_t rows, int64_t elems_per_row, int threads) {
    int64_t nt = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    const int64_t by_size = (rows * elems_per_row) / MIN_ELEMS_PER_THREAD;
    if (nt > by_size) nt = by_size < 1 ? 1 : by_size;
    if (nt > rows) nt = rows < 1 ? 1 : rows;
    if (nt == 1) { f(a, 0, rows); return; }
    job_t jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int64_t t = 0; t < nt; ++t) {
        jobs[t].f = f; jobs[t].a = a;
        jobs[t].r0 = rows * t / nt; jobs[t].r1 = rows * (t + 1) / nt;
    }
    for (int64_t t = 1; t < nt; ++t) started[t] = pthread_create(&tid[t], NULL, run_job, &jobs[t]) == 0;
    run_job(&jobs[0]);
    for (int64_t t = 1; t < nt; ++t) {
        if (started[t]) pthread_join(tid[t], NULL);
        else run_job(&jobs[t]); /* no thread to spare: do it here */
    }
}

/* ------------------------------------------------------------------ exported */

/* 1: the AVX2+FMA build runs, 0: the baseline build. force = 0 selects the baseline, 1 the AVX2
   build where the CPU has it (tests), -1 keeps the choice. */
int cimkit_force_isa(int force) {
    if (force == 0) use_avx2 = 0;
    if (force == 1) use_avx2 = cpu_has_avx2();
    return avx2();
}

void cimkit_dac_rows(const float *x, float *q, float *r, int64_t rows, int64_t cols, float levels, int threads) {
    args_t a = {0};
    a.x = x; a.q = q; a.r = r; a.cols = cols; a.levels = levels; a.rows = rows;
    run_rows(avx2() ? dac_avx2 : dac_base, &a, rows, cols, threads);
}

/* z, noise: `rows` x `cols` (any split of the flat tensor); returns 1 when a code is at full scale */
int cimkit_adc_codes(float *z, const float *noise, int64_t rows, int64_t cols, float sigma, float levels, int threads) {
    args_t a = {0};
    int saturated = 0;
    a.q = z; a.noise = noise; a.rows = rows; a.cols = cols; a.sigma = sigma; a.adc_levels = levels;
    a.has_noise = noise != NULL; a.has_adc = 1; a.saturated = &saturated;
    run_rows(avx2() ? codes_avx2 : codes_base, &a, rows, cols, threads);
    return saturated;
}

/* c, y: (B, N, S), y may be c; r: (B,) or one value (r_stride 0); k, b: (N,); codes (mode 3): like c */
void cimkit_col_scale(const float *c, float *y, const float *r, int64_t r_stride, const float *k, float inv,
                      const float *b, const float *codes, float levels, int64_t bsz, int64_t n, int64_t s, int mode,
                      int threads) {
    args_t a = {0};
    a.x = c; a.q = y; a.r = (float *)r; a.r_stride = r_stride; a.k = k; a.inv = inv; a.b = b; a.codes = codes;
    a.adc_levels = levels; a.cols = n; a.inner = s; a.mode = mode; a.rows = bsz * n;
    if (s == 1) run_rows(avx2() ? lin_avx2 : lin_base, &a, bsz, n, threads);
    else run_rows(avx2() ? cols_avx2 : cols_base, &a, bsz * n, s, threads);
}

/* g, y: (rows, cols), y may be g; r: (rows,) the ranges dac_rows returned */
void cimkit_row_scale(const float *g, float *y, const float *r, int64_t rows, int64_t cols, float levels, int threads) {
    args_t a = {0};
    a.x = g; a.q = y; a.r = (float *)r; a.cols = cols; a.levels = levels; a.rows = rows;
    run_rows(avx2() ? scale_avx2 : scale_base, &a, rows, cols, threads);
}

void cimkit_adc_rows(const float *z, const float *noise, float *y, int64_t tiles, int64_t rows, int64_t cols,
                     float sigma, float adc_levels, int has_adc, const float *k, const float *s, const float *b,
                     int threads) {
    args_t a = {0};
    a.z = z; a.noise = noise; a.y = y; a.tiles = tiles; a.rows = rows; a.cols = cols;
    a.sigma = sigma; a.has_noise = noise != NULL; a.adc_levels = adc_levels; a.has_adc = has_adc;
    a.k = k; a.s = s; a.b = b;
    run_rows(avx2() ? adc_avx2 : adc_base, &a, rows, cols * tiles, threads);
}

/* g_mean, g_sigma, noise: (S, D, M) conductances (µS); a: (S, M); devs = D (1 or 2); inv = 1 / g_range;
   post: a gain applied after (the inference route folds its scalar gains into A).
   Slices run on one thread each at most (a read is small next to the activations' passes). */
void cimkit_read_pairs(const float *gm, const float *gs, const float *nz, float *a, int64_t slices, int64_t devs,
                       int64_t m, float inv, float post) {
    args_t r = {0};
    r.gm = gm; r.gs = gs; r.noise = nz; r.a = a; r.devs = devs; r.cols = m; r.inv = inv; r.post = post;
    (avx2() ? read_avx2 : read_base)(&r, 0, slices);
}

/* the device-read stages over n conductances; `stage` 0, 1, 2 = A, B, C (see the top comment) */
void cimkit_device_read(int stage, const float *gt, const float *z0, const float *z1, const float *z2, float *g,
                        float *lq, float *ld, int64_t n, const float *c, int nc, const float *k, int threads) {
    dev_args_t d = {0};
    d.gt = gt; d.z0 = z0; d.z1 = z1; d.z2 = z2; d.g = g; d.lq = lq; d.ld = ld;
    d.nc = nc < 0 ? 0 : (nc > 8 ? 8 : nc);
    for (int i = 0; i < d.nc; ++i) d.c[i] = c[i];
    d.q_floor = k[0]; d.d_floor = k[1]; d.neg_e = k[2]; d.m1 = k[3]; d.m0 = k[4]; d.m_lo = k[5]; d.m_hi = k[6];
    d.s1 = k[7]; d.s0 = k[8]; d.s_lo = k[9]; d.s_hi = k[10]; d.neg_k = k[11]; d.cap = k[12]; d.value = k[13];
    d.std = k[15]; d.has_q = k[16] != 0.0f; d.read = k[17] != 0.0f;
    args_t a = {0};
    a.dv = &d; a.cols = n;
    const int64_t rows = (n + DEV_CHUNK - 1) / DEV_CHUNK;
    body_t f = stage == 0 ? (avx2() ? deva_avx2 : deva_base)
             : stage == 1 ? (avx2() ? devb_avx2 : devb_base) : (avx2() ? devc_avx2 : devc_base);
    run_rows(f, &a, rows, DEV_CHUNK, threads);
}

/* x, y: n elements (y may be x) */
void cimkit_fake_quant(const float *x, float *y, int64_t n, float scale, float zp, float qmin, float qmax,
                       int threads) {
    args_t a = {0};
    a.x = x; a.q = y; a.cols = n; a.scale = scale; a.zp = zp; a.qmin = qmin; a.qmax = qmax;
    run_rows(avx2() ? fq_avx2 : fq_base, &a, (n + DEV_CHUNK - 1) / DEV_CHUNK, DEV_CHUNK, threads);
}

/* w: (N, T*R) weight; a: like w (the operand, written in w's layout); ws: (T, N) scales;
   noise: (T, R, N) standard normals or NULL; std: the channel noise's relative std */
void cimkit_train_weights(const float *w, float *a, float *ws, const float *noise, int64_t tiles, int64_t rows,
                          int64_t n, float std, float c) {
    args_t r = {0};
    r.x = w; r.q = a; r.r = ws; r.noise = noise; r.tiles = tiles; r.inner = rows; r.cols = n; r.sigma = std;
    r.scale = c;
    (avx2() ? wts_avx2 : wts_base)(&r, 0, n);
}

/* z: (2, B, N) partial sums, overwritten with their noisy values; noise: (B, 2, N) or NULL; y: (B, N);
   ws: (2, N); r: (B,); b: (N,) or NULL */
void cimkit_tiles_adc(float *z, const float *noise, float *y, int64_t bsz, int64_t n, float alpha, float l_r,
                      float r_l, float levels, const float *ws, const float *r, const float *b, int threads) {
    args_t a = {0};
    a.z = z; a.noise = noise; a.y = y; a.rows = bsz; a.cols = n; a.sigma = alpha; a.scale = l_r; a.inv = r_l;
    a.adc_levels = levels; a.k = ws; a.r = (float *)r; a.b = b;
    run_rows(avx2() ? tadc_avx2 : tadc_base, &a, bsz, 2 * n, threads);
}

/* gy: (B, N); z: (T, B, N) the noisy partial sums; out: (T, B, N); ws: (T, N); r: (B,) */
void cimkit_tiles_adc_grad(const float *gy, const float *z, float *out, int64_t tiles, int64_t bsz, int64_t n,
                           float rf, const float *ws, const float *r, int threads) {
    args_t a = {0};
    a.x = gy; a.z = z; a.q = out; a.rows = bsz; a.cols = n; a.sigma = rf; a.k = ws; a.r = (float *)r;
    run_rows(avx2() ? tadcg_avx2 : tadcg_base, &a, tiles * bsz, n, threads);
}

/* ga: (T, R, N) with element strides (st, sr, sn); gw: (N, T*R) contiguous; ws: (T, N) */
void cimkit_weight_grad(const float *ga, float *gw, const float *ws, int64_t tiles, int64_t rows, int64_t n,
                        int64_t st, int64_t sr, int64_t sn, float c) {
    args_t a = {0};
    a.x = ga; a.q = gw; a.k = ws; a.tiles = tiles; a.inner = rows; a.cols = n; a.devs = st; a.r_stride = sr;
    a.mode = (int)sn; a.scale = c;
    (avx2() ? wgrad_avx2 : wgrad_base)(&a, 0, n);
}

/* z, y: (B, N); noise like z or NULL; r: (B,) or one value (r_stride 0); k, b: (N,) */
int cimkit_adc_scale(float *z, const float *noise, float *y, int64_t bsz, int64_t n, float sigma, float levels,
                     const float *r, int64_t r_stride, const float *k, float inv, const float *b, int threads) {
    args_t a = {0};
    int saturated = 0;
    a.q = z; a.noise = noise; a.y = y; a.rows = bsz; a.cols = n; a.sigma = sigma; a.adc_levels = levels;
    a.r = (float *)r; a.r_stride = r_stride; a.k = k; a.inv = inv; a.b = b; a.saturated = &saturated;
    run_rows(avx2() ? adcs_avx2 : adcs_base, &a, bsz, n, threads);
    return saturated;
}
