/* pager_desc.h — the runtime's side of the expert pager (mmap/residency.h):
 * it describes a loaded model to the pager in the pager's own terms
 * (es_res_layout), so mmap/ never reads the model's structures. */
#ifndef ES_PAGER_DESC_H
#define ES_PAGER_DESC_H

#include "model.h"
#include "residency.h"

/* Describes model m, loaded from path, and starts its pager with the
 * paging parameters p (may be NULL); *out as es_res_new gives it (NULL for
 * a model without routed experts). */
es_status es_pager_new(const es_model *m, const char *path, const es_load_params *p, es_res **out, char *err,
                       size_t errlen);

#endif
