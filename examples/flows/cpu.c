/*
 * cpu: a CPU-bound flow for latency benchmarks (the API must stay responsive while it runs).
 *
 * Mixes a 64-bit state for argv[1] rounds (default 1000000) with no calls to the host in the
 * loop, then prints "checksum ROUNDS HEX". The checksum depends only on the number of rounds, so
 * a benchmark can verify the run.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long long rounds = argc > 1 ? atoll(argv[1]) : 1000000;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    uint64_t acc = 0;
    for (long long i = 0; i < rounds; i++) {
        /* xorshift64* step */
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        acc += x * 0x2545F4914F6CDD1Dull;
    }
    printf("checksum %lld %016llx\n", rounds, (unsigned long long)acc);
    return 0;
}
