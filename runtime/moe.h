/* moe.h — a mixture-of-experts FFN layer (moe.c): routing, the routed
 * experts over the resident groups, the shared expert, and the weighted
 * sum.  Internal to the runtime; forward.c calls it per MoE layer. */
#ifndef ES_MOE_H
#define ES_MOE_H

#include "model.h"

/* xb[T][D] = Σ_j w_tj · expert_j(xn_t) + shared(xn_t) for the batch's
 * normed rows xn[T][D] (session scratch) of layer il. */
void es_moe(es_session *s, int il, int T);

#endif
