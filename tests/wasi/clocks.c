/* Clocks and sleeping through wasi-libc; prints only facts that hold on any correct host. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

int main(void) {
    struct timespec res, a, b;
    printf("getres realtime: %d positive=%d\n", clock_getres(CLOCK_REALTIME, &res), ns(res) > 0);
    printf("getres monotonic: %d positive=%d\n", clock_getres(CLOCK_MONOTONIC, &res),
           ns(res) > 0);
    clock_gettime(CLOCK_REALTIME, &a);
    printf("realtime after 2020: %d\n", a.tv_sec > 1577836800);
    printf("time() agrees: %d\n", (long long)time(NULL) - a.tv_sec <= 2);
    int backwards = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 1000; i++) {
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (ns(b) < ns(a))
            backwards++;
        a = b;
    }
    printf("monotonic backwards: %d\n", backwards);
    struct timespec nap = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &a);
    printf("nanosleep: %d\n", nanosleep(&nap, NULL));
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("slept at least 20ms: %d\n", ns(b) - ns(a) >= 20 * 1000 * 1000);
    clock_gettime(CLOCK_MONOTONIC, &a);
    usleep(5000);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("usleep at least 5ms: %d\n", ns(b) - ns(a) >= 5 * 1000 * 1000);
    return 0;
}
