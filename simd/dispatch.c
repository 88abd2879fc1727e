/* dispatch.c — run-time choice of the kernel table.
 *
 * x86-64: cpuid for the instruction sets, and XGETBV for whether the OS saves
 * the AVX (YMM) and AVX-512 (opmask, ZMM) registers; an instruction set the
 * OS has not enabled is treated as absent.  aarch64: HWCAP bits.  The best
 * table the CPU can run is the default; es_kernels_for gives the table of a
 * named path, or refuses with a message when the CPU cannot run it.  Nothing
 * here is switched at run time: a model keeps the table it was loaded with
 * (es_load_params.simd, EDGESEEK_SIMD read by es_model_load), and code that
 * is not per model passes the table it wants.  Features are detected and the
 * tables built once (pthread_once).
 */
#include "kernels.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define ES_X86 1
#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#endif

typedef struct cpu_features {
    int avx2, fma, f16c;
    int avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16;
    int amx; /* AMX-TILE and AMX-INT8, their state enabled in XCR0 and granted by Linux */
    int neon, dotprod, i8mm;
} cpu_features;

static cpu_features cpu;
static char features_line[256];

#ifdef ES_X86
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}
#endif

static void detect(void) {
#ifdef ES_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    cpu.fma = (c >> 12) & 1;
    cpu.f16c = (c >> 29) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    int os_avx = (xcr0 & 0x6) == 0x6;       /* XMM and YMM state */
    int os_avx512 = (xcr0 & 0xe6) == 0xe6;  /* plus opmask, ZMM_Hi256, Hi16_ZMM */
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        cpu.avx2 = avx && os_avx && ((b >> 5) & 1);
        cpu.avx512f = os_avx512 && ((b >> 16) & 1);
        cpu.avx512dq = cpu.avx512f && ((b >> 17) & 1);
        cpu.avx512bw = cpu.avx512f && ((b >> 30) & 1);
        cpu.avx512vl = cpu.avx512f && ((b >> 31) & 1);
        cpu.avx512vnni = cpu.avx512f && ((c >> 11) & 1);
        /* AMX: tiles and int8 products (EDX 24, 25), XTILECFG and XTILEDATA
         * in XCR0 (bits 17, 18), and Linux's permission for the process */
        int amx = ((d >> 24) & 1) && ((d >> 25) & 1) && (xcr0 & 0x60000) == 0x60000;
        __cpuid_count(7, 1, a, b, c, d);
        cpu.avx512bf16 = cpu.avx512f && ((a >> 5) & 1);
        cpu.amx = amx && cpu.avx512vnni && cpu.avx512bw && cpu.avx512vl && cpu.avx512dq && es_amx_table() &&
                  es_amx_enable();
    }
    if (!os_avx) cpu.fma = cpu.f16c = 0;
#elif defined(__aarch64__)
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    cpu.neon = (hw & HWCAP_ASIMD) != 0;
    cpu.dotprod = (hw & HWCAP_ASIMDDP) != 0;
    cpu.i8mm = (hw2 & HWCAP2_I8MM) != 0;
#endif
    snprintf(features_line, sizeof features_line, "%s%s%s%s%s%s%s%s%s%s%s%s%s",
             cpu.avx2 ? "avx2 " : "", cpu.fma ? "fma " : "", cpu.f16c ? "f16c " : "",
             cpu.avx512f ? "avx512f " : "", cpu.avx512bw ? "avx512bw " : "", cpu.avx512vl ? "avx512vl " : "",
             cpu.avx512dq ? "avx512dq " : "", cpu.avx512vnni ? "avx512vnni " : "",
             cpu.avx512bf16 ? "avx512bf16 " : "", cpu.amx ? "amx " : "", cpu.neon ? "neon " : "", cpu.dotprod ? "dotprod " : "",
             cpu.i8mm ? "i8mm " : "");
    size_t l = strlen(features_line);
    if (l) features_line[l - 1] = 0;
    else snprintf(features_line, sizeof features_line, "(no SIMD extensions detected)");
}

int es_simd_supported(const char *name) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, detect);
    if (!strcmp(name, "generic")) return 1;
    if (!strcmp(name, "avx2")) return es_kernels_avx2 && cpu.avx2 && cpu.fma && cpu.f16c;
    if (!strcmp(name, "avx512"))
        return es_kernels_avx512 && cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512dq &&
               cpu.fma && cpu.f16c;
    if (!strcmp(name, "amx")) return es_simd_supported("avx512") && cpu.amx;
    if (!strcmp(name, "neon")) return es_kernels_neon && cpu.neon;
    return 0;
}

static const es_kernels *table_by_name(const char *name) {
    if (!strcmp(name, "generic")) return &es_kernels_generic;
    if (!strcmp(name, "avx2")) return es_kernels_avx2;
    /* with VNNI, the variant that uses it (every caller has run detect()) */
    if (!strcmp(name, "avx512")) return es_kernels_avx512 ? es_avx512_for(cpu.avx512vnni) : NULL;
    if (!strcmp(name, "amx")) return es_amx_table();
    /* the neon variant for this CPU's dotprod and i8mm (likewise) */
    if (!strcmp(name, "neon")) return es_kernels_neon ? es_neon_for(cpu.dotprod, cpu.i8mm) : NULL;
    return NULL;
}

/* The complete table of each path: an ISA table with its empty slots filled
 * from generic, so callers never see a NULL slot the generic table has.
 * Built once, read-only after. */
static const char *const path_names[] = {"generic", "avx2", "avx512", "neon", "amx"};
enum { N_PATHS = sizeof path_names / sizeof path_names[0] };
static es_kernels merged[N_PATHS];
static const es_kernels *best;

static void fill_table(es_kernels *dst, const es_kernels *t) {
    *dst = *t;
    for (int i = 0; i < ES_TYPE_COUNT; i++) {
        if (!dst->matvec[i]) {
            dst->matvec[i] = es_kernels_generic.matvec[i];
            dst->act_type[i] = es_kernels_generic.act_type[i];
        }
        if (!dst->dequant_row[i]) dst->dequant_row[i] = es_kernels_generic.dequant_row[i];
        if (!dst->quant_row[i]) dst->quant_row[i] = es_kernels_generic.quant_row[i];
        if (!dst->dot_kv[i]) dst->dot_kv[i] = es_kernels_generic.dot_kv[i];
        if (!dst->axpy_kv[i]) dst->axpy_kv[i] = es_kernels_generic.axpy_kv[i];
    }
    if (!dst->rmsnorm) dst->rmsnorm = es_kernels_generic.rmsnorm;
    if (!dst->dot_f32) dst->dot_f32 = es_kernels_generic.dot_f32;
    if (!dst->axpy_f32) dst->axpy_f32 = es_kernels_generic.axpy_f32;
    if (!dst->silu_mul) dst->silu_mul = es_kernels_generic.silu_mul;
    if (!dst->softmax) dst->softmax = es_kernels_generic.softmax;
}

static void build_tables(void) {
    es_simd_supported("generic"); /* detect() */
    for (int i = 0; i < N_PATHS; i++) {
        const es_kernels *t = table_by_name(path_names[i]);
        if (t) fill_table(&merged[i], t);
    }
    static const int order[] = {4, 2, 1, 3}; /* amx, avx512, avx2, neon */
    best = &merged[0];
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (es_simd_supported(path_names[order[i]])) {
            best = &merged[order[i]];
            break;
        }
}
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

const es_kernels *es_kernels_for(const char *name, char *err, size_t errlen) {
    pthread_once(&tables_once, build_tables);
    for (int i = 0; name && i < N_PATHS; i++) {
        if (strcmp(name, path_names[i])) continue;
        if (es_simd_supported(name)) return &merged[i];
        if (err && errlen)
            snprintf(err, errlen, "SIMD path '%s' cannot run here: %s", name,
                     table_by_name(name) ? "this CPU (or its OS) lacks the instructions"
                                         : "not built for this architecture");
        return NULL;
    }
    if (err && errlen) snprintf(err, errlen, "unknown SIMD path '%s' (generic, avx2, avx512, amx, neon)", name ? name : "");
    return NULL;
}

const es_kernels *es_kernels_best(void) {
    pthread_once(&tables_once, build_tables);
    return best;
}

const char *es_simd_name(void) { return es_kernels_best()->name; }
const char *es_cpu_features(void) {
    es_simd_supported("generic");
    return features_line;
}

/* ---- resolution with fallback to generic ---------------------------------- */

es_matvec_plan es_plan_matvec(const es_kernels *K, uint32_t type) {
    es_matvec_plan p = {0, 0};
    if (type >= ES_TYPE_COUNT) return p;
    p.fn = K->matvec[type];
    p.act_type = K->act_type[type];
    return p;
}

es_matvec_fn es_matvec_generic(uint32_t weight_type) {
    return weight_type < ES_TYPE_COUNT ? es_kernels_generic.matvec[weight_type] : NULL;
}

size_t es_act_bytes(uint32_t act_type, int64_t n) {
    const es_type_traits *t = es_type_info(act_type);
    int64_t bs = t ? t->block_size : 1;
    return es_row_bytes(act_type, (n + bs - 1) / bs * bs);
}

void es_prepare_act(const es_kernels *K, uint32_t act_type, const float *x, void *dst, int64_t n) {
    if (act_type == ES_TYPE_F32) {
        memcpy(dst, x, sizeof(float) * (size_t)n);
        return;
    }
    es_quant_row(K, act_type, x, dst, n);
}

int es_matvec(const es_kernels *K, uint32_t type, const void *w, size_t row_bytes, int64_t n,
              const float *x, float *y, int64_t r0, int64_t r1) {
    es_matvec_plan p = es_plan_matvec(K, type);
    if (!p.fn) return -1;
    if (p.act_type == ES_TYPE_F32) {
        p.fn(w, row_bytes, n, x, y, r0, r1);
        return 0;
    }
    void *act = malloc(es_act_bytes(p.act_type, n));
    if (!act) return -1;
    es_prepare_act(K, p.act_type, x, act, n);
    p.fn(w, row_bytes, n, act, y, r0, r1);
    free(act);
    return 0;
}

int es_matmul(const es_kernels *K, uint32_t type, const void *w, size_t row_bytes, int64_t n, const void *act, size_t act_stride,
              int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1) {
    if (type >= ES_TYPE_COUNT || !K->matvec[type]) return -1;
    if (K->matmul[type]) {
        K->matmul[type](w, row_bytes, n, act, act_stride, n_tok, y, y_stride, r0, r1);
        return 0;
    }
    /* one matvec per token, writing into a row of Y */
    for (int64_t t = 0; t < n_tok; t++)
        K->matvec[type](w, row_bytes, n, (const char *)act + (size_t)t * act_stride,
                                y + t * y_stride, r0, r1);
    return 0;
}

int es_dequant_row(const es_kernels *K, uint32_t type, const void *src, float *dst, int64_t n) {
    if (type >= ES_TYPE_COUNT || !K->dequant_row[type]) return -1;
    K->dequant_row[type](src, dst, n);
    return 0;
}

int es_quant_row(const es_kernels *K, uint32_t type, const float *src, void *dst, int64_t n) {
    if (type >= ES_TYPE_COUNT || !K->quant_row[type]) return -1;
    K->quant_row[type](src, dst, n);
    return 0;
}
