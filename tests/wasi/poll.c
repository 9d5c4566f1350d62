/* poll_oneoff with clock and fd subscriptions (raw calls). /sandbox holds data.txt (10 bytes). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <wasi/api.h>

static __wasi_timestamp_t now(void) {
    __wasi_timestamp_t t = 0;
    (void)__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t);
    return t;
}

static void clock_sub(__wasi_subscription_t *s, __wasi_userdata_t ud, __wasi_clockid_t id,
                      __wasi_timestamp_t timeout, int abstime) {
    memset(s, 0, sizeof *s);
    s->userdata = ud;
    s->u.tag = __WASI_EVENTTYPE_CLOCK;
    s->u.u.clock.id = id;
    s->u.u.clock.timeout = timeout;
    s->u.u.clock.flags = abstime ? __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME : 0;
}

static void fd_sub(__wasi_subscription_t *s, __wasi_userdata_t ud, int write, __wasi_fd_t fd) {
    memset(s, 0, sizeof *s);
    s->userdata = ud;
    s->u.tag = write ? __WASI_EVENTTYPE_FD_WRITE : __WASI_EVENTTYPE_FD_READ;
    s->u.u.fd_read.file_descriptor = fd;
}

int main(void) {
    __wasi_subscription_t subs[4];
    __wasi_event_t ev[4];
    __wasi_size_t n = 0;

    clock_sub(&subs[0], 11, __WASI_CLOCKID_MONOTONIC, 15000000, 0);
    __wasi_timestamp_t t0 = now();
    int e = __wasi_poll_oneoff(subs, ev, 1, &n);
    printf("one relative clock: e=%d n=%d ud=%d type=%d err=%d waited=%d\n", e, (int)n,
           (int)ev[0].userdata, ev[0].type, ev[0].error, now() - t0 >= 15000000);

    clock_sub(&subs[0], 21, __WASI_CLOCKID_MONOTONIC, 200000000, 0);
    clock_sub(&subs[1], 22, __WASI_CLOCKID_MONOTONIC, 10000000, 0);
    t0 = now();
    e = __wasi_poll_oneoff(subs, ev, 2, &n);
    printf("two clocks: e=%d n=%d ud=%d short=%d\n", e, (int)n, (int)ev[0].userdata,
           now() - t0 < 200000000);

    clock_sub(&subs[0], 31, __WASI_CLOCKID_MONOTONIC, now() - 1, 1);
    e = __wasi_poll_oneoff(subs, ev, 1, &n);
    printf("past absolute deadline: e=%d n=%d ud=%d\n", e, (int)n, (int)ev[0].userdata);

    __wasi_timestamp_t wall = 0;
    (void)__wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 1, &wall);
    clock_sub(&subs[0], 41, __WASI_CLOCKID_REALTIME, wall + 10000000, 1);
    t0 = now();
    e = __wasi_poll_oneoff(subs, ev, 1, &n);
    printf("realtime absolute: e=%d n=%d ud=%d waited=%d\n", e, (int)n, (int)ev[0].userdata,
           now() - t0 >= 5000000);

    /* Each fd subscription alongside a long timeout: the fd must win, quickly. */
    int fd = open("/sandbox/data.txt", O_RDONLY);
    for (int write = 0; write < 2; write++) {
        clock_sub(&subs[0], 51, __WASI_CLOCKID_MONOTONIC, 5000000000ULL, 0);
        fd_sub(&subs[1], 52, write, write ? 1 : (__wasi_fd_t)fd);
        t0 = now();
        e = __wasi_poll_oneoff(subs, ev, 2, &n);
        int seen = 0, seen_clock = 0;
        for (__wasi_size_t i = 0; i < n; i++) {
            if (ev[i].userdata == 52 && !ev[i].error &&
                ev[i].type == (write ? __WASI_EVENTTYPE_FD_WRITE : __WASI_EVENTTYPE_FD_READ))
                seen = 1;
            if (ev[i].userdata == 51)
                seen_clock = 1;
        }
        printf("%s: e=%d ready=%d clock=%d quick=%d\n", write ? "stdout write" : "file read", e,
               seen, seen_clock, now() - t0 < 1000000000);
    }
    printf("zero subscriptions: %d\n", __wasi_poll_oneoff(subs, ev, 0, &n));
    return 0;
}
