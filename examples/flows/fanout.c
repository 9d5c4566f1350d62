/*
 * fanout: the end-to-end scenario of a durable flow.
 *
 * Schedules 20 tasks on queue "square" with the payloads "0" .. "19" (a worker answers each with
 * the square of the number, in decimal), awaits them all, sleeps 100 ms durably, waits for the
 * signal "go" whose payload is a decimal number k, prints (sum of the task results) + k and exits
 * with that value modulo 256. With correct workers and k = 0 it prints 2470 and exits with 166.
 * A failed task or a result that is not a number makes it fail with exit code 1.
 */
#include <dwasm.h>
#include <stdio.h>
#include <stdlib.h>

#define TASKS 20

/* A decimal integer with optional sign and surrounding whitespace; 0 on success. */
static int parse_long(const char *s, long long *out) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s)
        return -1;
    while (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')
        end++;
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

int main(void) {
    int32_t handles[TASKS];
    char payload[16];
    for (int i = 0; i < TASKS; i++) {
        snprintf(payload, sizeof payload, "%d", i);
        handles[i] = dwasm_schedule_str("square", payload);
        if (handles[i] < 0) {
            fprintf(stderr, "fanout: scheduling task %d failed: %d\n", i, handles[i]);
            return 1;
        }
    }
    int32_t r = dwasm_await_all(handles, TASKS);
    if (r < 0) {
        fprintf(stderr, "fanout: await failed: %d\n", r);
        return 1;
    }
    long long sum = 0;
    for (int i = 0; i < TASKS; i++) {
        char *result = dwasm_result_string(handles[i], NULL);
        int32_t status = dwasm_handle_status(handles[i]);
        long long value;
        if (status != DWASM_SUCCEEDED) {
            fprintf(stderr, "fanout: task %d failed: %s\n", i, result ? result : "");
            return 1;
        }
        if (result == NULL || parse_long(result, &value) != 0) {
            fprintf(stderr, "fanout: task %d returned a non-number: %s\n", i, result ? result : "");
            return 1;
        }
        sum += value;
        free(result);
        dwasm_handle_release(handles[i]);
    }
    dwasm_sleep_ms(100);
    int32_t err = 0;
    char *go = dwasm_signal_wait_str("go", DWASM_FOREVER, &err);
    long long k;
    if (go == NULL || parse_long(go, &k) != 0) {
        fprintf(stderr, "fanout: signal go: expected a number, got %s (%d)\n", go ? go : "", err);
        return 1;
    }
    free(go);
    long long total = sum + k;
    printf("%lld\n", total);
    return (int)(((total % 256) + 256) % 256);
}
