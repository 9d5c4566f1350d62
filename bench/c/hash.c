/* Integer kernel: hashing a generated buffer with FNV-1a and an xxhash-style 32-bit mixer.
 *
 * The buffer lives in a static array in linear memory. It is filled from a xorshift32
 * generator so that the checksum depends on every byte; the hashing loops are pure
 * i32 arithmetic (xor, multiply, rotate, shift) plus byte and word loads.
 */

#define BUF_SIZE 65536

static unsigned char buffer[BUF_SIZE];

static unsigned fill(unsigned len, unsigned seed) {
    unsigned x = seed ? seed : 1u;
    for (unsigned i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buffer[i] = (unsigned char)x;
    }
    return x;
}

static unsigned rotl(unsigned x, unsigned r) {
    return (x << r) | (x >> (32u - r));
}

/* FNV-1a over the first len bytes (capped at BUF_SIZE), rounds times; returns the hash. */
unsigned fnv1a(int len, int rounds) {
    unsigned n = (unsigned)len > BUF_SIZE ? BUF_SIZE : (unsigned)len;
    unsigned h = 2166136261u;
    fill(n, 2463534242u);
    for (int r = 0; r < rounds; r++)
        for (unsigned i = 0; i < n; i++) {
            h ^= buffer[i];
            h *= 16777619u;
        }
    return h;
}

/* xxhash32-like: four lanes over 32-bit words, then an avalanche; rounds times over len bytes. */
unsigned mix32(int len, int rounds) {
    const unsigned p1 = 2654435761u, p2 = 2246822519u, p3 = 3266489917u;
    unsigned n = ((unsigned)len > BUF_SIZE ? BUF_SIZE : (unsigned)len) & ~15u;
    unsigned acc = 0;
    fill(n, 88172645u);
    for (int r = 0; r < rounds; r++) {
        unsigned v1 = acc + p1 + p2, v2 = acc + p2, v3 = acc, v4 = acc - p1;
        for (unsigned i = 0; i < n; i += 16) {
            const unsigned *w = (const unsigned *)(buffer + i);
            v1 = rotl(v1 + w[0] * p2, 13) * p1;
            v2 = rotl(v2 + w[1] * p2, 13) * p1;
            v3 = rotl(v3 + w[2] * p2, 13) * p1;
            v4 = rotl(v4 + w[3] * p2, 13) * p1;
        }
        unsigned h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18) + n;
        h ^= h >> 15;
        h *= p2;
        h ^= h >> 13;
        h *= p3;
        h ^= h >> 16;
        acc ^= h;
    }
    return acc;
}
