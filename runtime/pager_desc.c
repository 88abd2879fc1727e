/* pager_desc.c — fills the pager's description of a loaded model
 * (es_res_layout, mmap/residency.h): file and mapping, the byte ranges of
 * each MoE layer's expert tensors, the always-hot bytes, the tensors to
 * advise, which experts this process computes (a share of them, or all),
 * and the sessions' memory (their count, cache type) for the automatic budget. */
#include "pager_desc.h"

#include "placement.h"

#include <stdlib.h>
#include <string.h>

/* The sessions' memory: per session, forward.c's scratch for the default
 * thread count (threads are set after the load), the latent KV cache of
 * n_ctx positions at the cache type they will use (F32 when the type cannot
 * hold the model's rows: the session would then fail, not use less), and
 * 8 MiB for the thread pool, stacks and allocator slack. */
static int64_t session_bytes(const es_model *m, int n_ctx, int kv_type, int n_sessions) {
    size_t per_token = es_model_kv_bytes_per_token_of(m, kv_type);
    if (!per_token) per_token = es_hp_kv_bytes_per_token(&m->hp);
    int64_t one = es_forward_session_bytes(m, n_ctx, 0) + (int64_t)per_token * n_ctx + ((int64_t)8 << 20);
    return one * (n_sessions > 0 ? n_sessions : 1);
}

static int is_expert_tensor(const char *name) {
    static const char *sfx[] = {"ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"};
    size_t n = strlen(name);
    for (int i = 0; i < 3; i++) {
        size_t k = strlen(sfx[i]);
        if (n >= k && strcmp(name + n - k, sfx[i]) == 0) return 1;
    }
    return 0;
}

es_status es_pager_new(const es_model *m, const char *path, const es_load_params *p, es_res **out, char *err,
                       size_t errlen) {
    const es_hparams *hp = &m->hp;
    const es_gguf_ctx *g = m->gguf;
    es_res_layout lay = {
        .path = path,
        .base = g->base,
        .map_size = (uint64_t)g->map_size,
        .first_moe = hp->n_dense,
        .n_moe = hp->n_layers > hp->n_dense ? hp->n_layers - hp->n_dense : 0,
        .n_experts = hp->n_experts,
        .n_used = hp->n_used,
    };
    *out = NULL;
    if (!lay.n_moe) return ES_OK; /* no routed experts */
    int n_ctx = p && p->n_ctx ? p->n_ctx : (hp->n_ctx_train < ES_DEFAULT_CTX ? hp->n_ctx_train : ES_DEFAULT_CTX);
    lay.session_bytes = session_bytes(m, n_ctx, p ? p->kv_type : 0, p ? p->n_sessions : 1);

    es_res_range *ranges = calloc((size_t)lay.n_moe * 3, sizeof *ranges);
    es_res_region *regions = calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof *regions);
    uint8_t *owned = m->n_shares > 1 ? malloc((size_t)lay.n_moe * (size_t)hp->n_experts) : NULL;
    es_status st = ES_ERR_NOMEM;
    if (!ranges || !regions || (m->n_shares > 1 && !owned)) {
        snprintf(err, errlen, "out of memory for the expert table");
        goto done;
    }
    int64_t expert_bytes = 0;
    for (int l = 0; l < lay.n_moe; l++) {
        const es_layer *ly = &m->layers[hp->n_dense + l];
        const es_weight *w[3] = {&ly->gate_exps, &ly->up_exps, &ly->down_exps};
        uint64_t unit = 0;
        for (int q = 0; q < 3; q++) {
            /* the experts' matrices lie back to back: stride = one matrix */
            ranges[(size_t)l * 3 + q] = (es_res_range){(uint64_t)(w[q]->data - g->base), w[q]->mat_bytes, w[q]->mat_bytes};
            unit += w[q]->mat_bytes;
        }
        expert_bytes += (int64_t)unit * hp->n_experts;
    }
    lay.ranges = ranges;
    if (owned)
        for (int l = 0; l < lay.n_moe; l++)
            for (int e = 0; e < hp->n_experts; e++)
                owned[(size_t)l * hp->n_experts + e] = (uint8_t)es_model_owns(m, hp->n_dense + l, e);
    lay.owned = owned;
    lay.hot_bytes = (int64_t)m->weight_bytes - expert_bytes;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const es_gguf_tensor *t = &g->tensors[i];
        int kind = is_expert_tensor(t->name) ? ES_RES_EXPERTS
                   : !strcmp(t->name, "token_embd.weight") ? ES_RES_RANDOM : ES_RES_HOT;
        uint64_t off = t->nbytes ? (uint64_t)(t->data - g->base) : 0; /* an empty tensor may have no data */
        regions[i] = (es_res_region){off, t->nbytes, kind};
    }
    lay.regions = regions;
    lay.n_regions = (size_t)g->n_tensors;
    st = es_res_new(&lay, p, out, err, errlen);
done:
    free(owned);
    free(ranges);
    free(regions);
    return st;
}
