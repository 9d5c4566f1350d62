/* Integer hash loop: FNV-1a and a murmur-style mixer over a generated buffer. */
#include <stdint.h>
#include <stdio.h>

static uint8_t buf[4096];

int main(void) {
    uint32_t seed = 12345;
    for (int i = 0; i < (int)sizeof buf; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (uint8_t)(seed >> 16);
    }
    uint32_t fnv = 2166136261u, mix = 0;
    for (int round = 0; round < 60; round++) {
        for (int i = 0; i < (int)sizeof buf; i++) {
            fnv = (fnv ^ buf[i]) * 16777619u;
        }
        for (int i = 0; i < (int)sizeof buf; i += 4) {
            uint32_t k = buf[i] | buf[i + 1] << 8 | buf[i + 2] << 16 | (uint32_t)buf[i + 3] << 24;
            k *= 0xcc9e2d51u;
            k = (k << 15) | (k >> 17);
            k *= 0x1b873593u;
            mix ^= k;
            mix = ((mix << 13) | (mix >> 19)) * 5 + 0xe6546b64u;
        }
    }
    printf("hashloop %u %u\n", fnv, mix);
    return 0;
}
