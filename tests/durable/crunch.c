/* A deterministic, long-running WASI program for the SIGKILL/resume test: it hashes, prints
 * progress lines, appends to a log file and rewrites a results file in a preopened directory,
 * renames a file, and exits with a status computed from its work. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t state[4096];

static uint32_t mix(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352dU;
    x ^= x >> 15; x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 40;
    const char *dir = argc > 2 ? argv[2] : "/data";
    char path[256], tmp[256];
    snprintf(path, sizeof path, "%s/log.txt", dir);
    FILE *log = fopen(path, "a");
    if (!log) { perror("open log"); return 10; }
    uint32_t h = 2166136261U;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 4096; i++) {
            state[i] = mix(state[i] ^ (uint32_t)(i * 2654435761U) ^ (uint32_t)r);
            h = (h ^ state[i]) * 16777619U;
        }
        printf("round %d hash %08x\n", r, h);
        fprintf(log, "r%d:%08x\n", r, h);
        fflush(log);
        if (r % 5 == 4) {
            snprintf(tmp, sizeof tmp, "%s/results.tmp", dir);
            snprintf(path, sizeof path, "%s/results.txt", dir);
            FILE *res = fopen(tmp, "w");
            if (!res) { perror("open results"); return 11; }
            fprintf(res, "after round %d: %08x\n", r, h);
            fclose(res);
            if (rename(tmp, path) != 0) { perror("rename"); return 12; }
        }
        fflush(stdout);
    }
    fclose(log);
    fprintf(stderr, "done: %08x\n", h);
    return (int)(h % 7) + 1;
}
