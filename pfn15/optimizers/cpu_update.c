/* The CPU optimizer updates and the finite-gradient check, one pass each, on the
 * rank's OpenMP threads (pfn15/optimizers/cpu_update.py loads this through ctypes).
 *
 * Each update is the NumPy code of its rule (momentum_sgd.py, rmsprop_warmup.py,
 * lars.py) element by element, every operation rounded to float32 where NumPy
 * rounds it: built with -ffp-contract=off and without -ffast-math, so the same
 * bits. The scalars arrive as NumPy makes them: a Python float meeting a
 * float32 array is rounded to float32 first.
 *
 * Why: NumPy runs an operation on one thread, so pfn15 split the arrays over a
 * Python thread pool, whose second thread then fought oneDNN's OpenMP worker
 * (still spinning after the backward pass) for the second core. Here the work
 * goes to that same OpenMP team.
 */
#include <stdint.h>
#include <math.h>

#define LOOP _Pragma("omp parallel for schedule(static) num_threads(threads)")

/* Raised with every change of a signature or of what a function computes: an
 * editable install updated by git pull keeps the library it built until the
 * next install, and cpu_update.py must not call an older one. */
int pfn15_cpu_update_version(void) { return 1; }

/* The weight decay hook's g += rate * w, fused into the rule (weight_decay.py). */
static inline float decayed(float *restrict g, const float *restrict w, int64_t i,
                            int has_rate, float rate) {
    float gi = g[i];
    if (has_rate) {
        float t = rate * w[i];
        gi = gi + t;
        g[i] = gi;
    }
    return gi;
}

/* momentum_sgd.py: g += rate * w (rate != 0); v *= momentum; v -= lr * g; w += v */
void pfn15_momentum_sgd_f32(float *restrict g, float *restrict w, float *restrict v,
                            int64_t n, int has_rate, float rate, float momentum, float lr,
                            int threads) {
    LOOP
    for (int64_t i = 0; i < n; i++) {
        float gi = decayed(g, w, i, has_rate, rate);
        float vi = v[i] * momentum;
        float t = lr * gi;
        vi = vi - t;
        v[i] = vi;
        w[i] = w[i] + vi;
    }
}

/* rmsprop_warmup.py, _update_pieces:
 *   g += rate * w (rate != 0); m *= mu2; m += (1 - mu2) * g * g; v *= mu1;
 *   sgd_only: v -= lr * g
 *   else:     coef = rms / (sqrt(m) + eps); coef += sgd; v -= coef * g
 *   w += v
 * with rms = (1 - alpha_sgd) * lr_rmsprop and sgd = lr * alpha_sgd (Python floats). */
void pfn15_rmsprop_warmup_f32(float *restrict g, float *restrict w, float *restrict m,
                              float *restrict v, int64_t n, int has_rate, float rate,
                              float mu2, float one_minus_mu2, float mu1, int sgd_only,
                              float lr, float rms, float eps, float sgd, int threads) {
    LOOP
    for (int64_t i = 0; i < n; i++) {
        float gi = decayed(g, w, i, has_rate, rate);
        float mi = m[i] * mu2;
        float sq = one_minus_mu2 * gi;
        sq = sq * gi;
        mi = mi + sq;
        m[i] = mi;
        float vi = v[i] * mu1;
        float step;
        if (sgd_only) {
            step = lr * gi;
        } else {
            float den = sqrtf(mi);
            den = den + eps;
            float coef = rms / den;
            coef = coef + sgd;
            step = coef * gi;
        }
        vi = vi - step;
        v[i] = vi;
        w[i] = w[i] + vi;
    }
}

/* lars.py, _update_pieces: d = g + wd * w (wd != 0; g is left as it is);
 * v *= momentum; v -= scale * d (scale = float32(lr) * float32(local)); w += v */
void pfn15_lars_f32(const float *restrict g, float *restrict w, float *restrict v,
                    int64_t n, int has_wd, float wd, float momentum, float scale,
                    int threads) {
    LOOP
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (has_wd) {
            float t = wd * w[i];
            d = d + t;
        }
        float vi = v[i] * momentum;
        float t = scale * d;
        vi = vi - t;
        v[i] = vi;
        w[i] = w[i] + vi;
    }
}

/* 1 when no element of the `count` float32 arrays is NaN or infinite, else 0:
 * exact (an exponent field of all ones), whatever the values' sizes. */
int pfn15_all_finite_f32(const float *const *arrays, const int64_t *sizes, int64_t count,
                         int threads) {
    int bad = 0;
    #pragma omp parallel num_threads(threads) reduction(|:bad)
    for (int64_t k = 0; k < count; k++) {
        const uint32_t *x = (const uint32_t *)arrays[k];
        uint32_t any = 0;
        #pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < sizes[k]; i++)   /* NaN or inf: exponent bits all ones */
            any |= (uint32_t)((x[i] & 0x7f800000u) == 0x7f800000u);
        bad |= (int)any;
    }
    return !bad;
}
