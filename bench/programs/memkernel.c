/* Memory-bound: malloc'd arrays, memcpy, an insertion-sorted merge, prefix sums. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void merge(const int32_t *a, int na, const int32_t *b, int nb, int32_t *out) {
    int i = 0, j = 0, k = 0;
    while (i < na && j < nb) out[k++] = a[i] <= b[j] ? a[i++] : b[j++];
    while (i < na) out[k++] = a[i++];
    while (j < nb) out[k++] = b[j++];
}

static void msort(int32_t *v, int32_t *tmp, int n) {
    if (n <= 16) {
        for (int i = 1; i < n; i++) {
            int32_t x = v[i];
            int j = i - 1;
            while (j >= 0 && v[j] > x) { v[j + 1] = v[j]; j--; }
            v[j + 1] = x;
        }
        return;
    }
    int h = n / 2;
    msort(v, tmp, h);
    msort(v + h, tmp, n - h);
    merge(v, h, v + h, n - h, tmp);
    memcpy(v, tmp, (size_t)n * sizeof *v);
}

int main(void) {
    const int n = 6000;
    uint32_t seed = 7;
    int64_t check = 0;
    for (int round = 0; round < 2; round++) {
        int32_t *v = malloc((size_t)n * sizeof *v);
        int32_t *tmp = malloc((size_t)n * sizeof *tmp);
        int64_t *prefix = calloc((size_t)n + 1, sizeof *prefix);
        for (int i = 0; i < n; i++) {
            seed ^= seed << 13; seed ^= seed >> 17; seed ^= seed << 5;
            v[i] = (int32_t)(seed % 100000);
        }
        msort(v, tmp, n);
        for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + v[i];
        char *bytes = malloc(65536);
        for (int i = 0; i < 65536; i++) bytes[i] = (char)(i * 7 + round);
        for (int k = 0; k < 8; k++) memmove(bytes + 1 + k, bytes + k * 2, 60000);
        check += prefix[n] + v[n / 2] + bytes[12345] + bytes[59999];
        free(bytes); free(prefix); free(tmp); free(v);
    }
    printf("memkernel %lld\n", (long long)check);
    return 0;
}
