/*
 * bigmem: a flow with 16 MiB of live memory that changes one page per wake-up, for measuring
 * how many bytes an incremental checkpoint writes (bench/flows_bench.py).
 *
 * Fills a 16 MiB buffer with pseudo-random bytes (so that no chunk is shared with another or
 * compresses away), then argv[1] times (default 3) waits for the signal "tick" and changes one
 * byte in the next 64 KiB page of the buffer. Each wait checkpoints the flow: the first
 * checkpoint stores the whole buffer, every later one only the page that changed. Prints
 * "bigmem TICKS HEX" (a checksum of the buffer) and exits 0.
 */
#include <dwasm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define BIG (16u << 20)
#define PAGE 65536u

static uint64_t big[BIG / 8];

int main(int argc, char **argv) {
    int ticks = argc > 1 ? atoi(argv[1]) : 3;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (uint32_t i = 0; i < BIG; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        big[i / 8] = x * 0x2545F4914F6CDD1Dull;
    }
    for (int t = 0; t < ticks; t++) {
        int32_t err = 0;
        char *payload = dwasm_signal_wait_str("tick", DWASM_FOREVER, &err);
        free(payload);
        big[((uint32_t)(t + 1) * PAGE) % BIG / 8] ^= 0xFF;
    }
    uint64_t sum = 0;
    for (uint32_t i = 0; i < BIG; i += PAGE)
        sum = sum * 31 + big[i / 8];
    printf("bigmem %d %016llx\n", ticks, (unsigned long long)sum);
    return 0;
}
