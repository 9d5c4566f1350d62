/* Memory-heavy kernel: sieve of Eratosthenes over a static byte array.
 *
 * Mostly byte stores at strided addresses and byte loads in the counting pass, so the
 * engine's memory access path dominates.
 */

#define SIEVE_MAX 1000000

static unsigned char composite[SIEVE_MAX + 1];

/* Number of primes <= limit (limit capped at SIEVE_MAX), recomputed rounds times. */
int sieve(int limit, int rounds) {
    int n = limit > SIEVE_MAX ? SIEVE_MAX : limit;
    int count = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i <= n; i++)
            composite[i] = 0;
        count = 0;
        for (int i = 2; i <= n; i++) {
            if (composite[i])
                continue;
            count++;
            for (int j = i + i; j <= n; j += i)
                composite[j] = 1;
        }
    }
    return count;
}
