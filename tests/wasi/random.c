/* random_get: prints 96 bytes in three calls (64 through getentropy, 0, 32 raw) as hex. */
#include <stdio.h>
#include <unistd.h>
#include <wasi/api.h>

static void hex(const unsigned char *p, int n) {
    for (int i = 0; i < n; i++)
        printf("%02x", p[i]);
    printf("\n");
}

int main(void) {
    unsigned char buf[64];
    printf("getentropy: %d\n", getentropy(buf, sizeof buf));
    hex(buf, sizeof buf);
    printf("empty: %d\n", __wasi_random_get(buf, 0));
    printf("raw: %d\n", __wasi_random_get(buf, 32));
    hex(buf, 32);
    return 0;
}
