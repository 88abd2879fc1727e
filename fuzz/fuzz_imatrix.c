/* fuzz_imatrix.c — owns: the libFuzzer harness of the importance-matrix
 * reader (format/imatrix.c).
 *
 * Each input is parsed by es_imatrix_parse from an exactly-sized copy (so
 * AddressSanitizer sees any read past the end); the reader itself reads
 * every value of every entry it accepts.  An accepted file must have a
 * message-free result with at least one entry; a refused one a message.
 * Built and run by fuzz/run.sh; not part of `make test`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imatrix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    es_imatrix *im = NULL;
    char err[512] = "";
    if (es_imatrix_parse(copy, size, &im, err, sizeof err) == 0) {
        if (!im || es_imatrix_count(im) < 1) abort();
        es_imatrix_free(im);
    } else if (im || !err[0]) {
        abort();
    }
    free(copy);
    return 0;
}
