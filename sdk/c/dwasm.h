/*
 * dwasm.h: the durable calls a flow makes to the dwasm host (the "dwasm" import module, ABI v1).
 *
 * A flow is an ordinary WASI command built with `clang --target=wasm32-wasi`; include this header
 * to also schedule tasks for workers, start child flows, await them, sleep durably and wait for
 * signals. docs/guest-abi.md is the reference: every function, its results and errors, and what
 * survives a crash. Everything here is declarations and small static inline helpers, so there is
 * no library to link; the functions become wasm imports of module "dwasm".
 *
 * Handles are small non-negative integers numbering the flow's tasks and children 0, 1, 2, ...
 * in the order it created them. A handle's outcome (succeeded or failed, with a result payload)
 * becomes visible to the flow once the host delivers it, which happens while the flow waits.
 */
#ifndef DWASM_H
#define DWASM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DWASM_IMPORT(name) __attribute__((import_module("dwasm"), import_name(name)))

/* The version of the ABI this header describes. */
#define DWASM_ABI_VERSION 1

/* handle_status() */
#define DWASM_PENDING 0
#define DWASM_SUCCEEDED 1
#define DWASM_FAILED 2

/* Negative results. Each function documents which of them it returns. */
#define DWASM_ERR_NAME (-1)        /* task_schedule: bad queue name; child_start: bad module id */
#define DWASM_ERR_TOO_LARGE (-2)   /* payload or arguments over the host's limit */
#define DWASM_ERR_OUTBOX_FULL (-3) /* too much scheduled since the last wait: await something */
#define DWASM_TIMEOUT (-1)         /* await_any, signal_wait: the timeout passed */
#define DWASM_ERR_COUNT (-2)       /* await_any: count is 0, negative or over 65536 */
#define DWASM_ERR_HANDLE (-3)      /* await_any: a handle the flow never created */
#define DWASM_ERR_SIGNAL_NAME (-2) /* signal_wait: bad signal name */
#define DWASM_UNKNOWN (-1)         /* handle_status, result_*: unknown handle / no outcome yet */
#define DWASM_RELEASED (-2)        /* result_*: the result was dropped by handle_release */
#define DWASM_NO_SIGNAL (-1)       /* signal_read: no signal received yet */

/* Timeouts in milliseconds: negative waits forever, 0 only looks at what has arrived. */
#define DWASM_FOREVER (-1LL)

/* --- the imports ------------------------------------------------------------------------- */

/* Schedule a task on `queue` (1..200 bytes of [A-Za-z0-9._-]) for external workers. Returns its
 * handle, DWASM_ERR_NAME, DWASM_ERR_TOO_LARGE or DWASM_ERR_OUTBOX_FULL. Never waits. */
DWASM_IMPORT("task_schedule")
int32_t dwasm_task_schedule(const char *queue, size_t queue_len, const void *payload,
                            size_t payload_len);

/* Start a child flow of module `module` ("sha256:" + 64 lowercase hex digits) with the
 * arguments after argv[0], each terminated by NUL (the last NUL may be left out). Returns its
 * handle, DWASM_ERR_NAME, DWASM_ERR_TOO_LARGE (or invalid UTF-8 arguments) or
 * DWASM_ERR_OUTBOX_FULL. The child succeeds iff it exits with 0; its result is its stdout (its
 * stderr when it failed). Never waits. */
DWASM_IMPORT("child_start")
int32_t dwasm_child_start(const char *module, size_t module_len, const char *args,
                          size_t args_len);

/* Wait until one of `count` handles has finished; returns the lowest index (into `handles`) of a
 * finished one, DWASM_TIMEOUT, DWASM_ERR_COUNT or DWASM_ERR_HANDLE. */
DWASM_IMPORT("await_any")
int32_t dwasm_await_any(const int32_t *handles, int32_t count, int64_t timeout_ms);

/* DWASM_PENDING, DWASM_SUCCEEDED, DWASM_FAILED, or DWASM_UNKNOWN. Never waits. */
DWASM_IMPORT("handle_status")
int32_t dwasm_handle_status(int32_t handle);

/* Length of the result (or error message) of a finished handle; DWASM_UNKNOWN, DWASM_RELEASED. */
DWASM_IMPORT("result_len")
int32_t dwasm_result_len(int32_t handle);

/* Copy up to `buf_len` bytes of the result into `buf`; returns the number copied,
 * DWASM_UNKNOWN or DWASM_RELEASED. */
DWASM_IMPORT("result_read")
int32_t dwasm_result_read(int32_t handle, void *buf, size_t buf_len);

/* Drop the stored result of a finished handle (its status stays readable), so that it is no
 * longer carried in every checkpoint. Returns 0, or DWASM_UNKNOWN if not finished. */
DWASM_IMPORT("handle_release")
int32_t dwasm_handle_release(int32_t handle);

/* Sleep durably: the time keeps running while the flow is stored or the host restarts. */
DWASM_IMPORT("sleep_ms")
void dwasm_sleep_ms(int64_t ms);

/* Wait for the next signal `name` (same rules as queue names); returns its payload's length,
 * DWASM_TIMEOUT or DWASM_ERR_SIGNAL_NAME. */
DWASM_IMPORT("signal_wait")
int32_t dwasm_signal_wait(const char *name, size_t name_len, int64_t timeout_ms);

/* Copy up to `buf_len` bytes of the last signal's payload; returns the number copied or
 * DWASM_NO_SIGNAL. */
DWASM_IMPORT("signal_read")
int32_t dwasm_signal_read(void *buf, size_t buf_len);

/* --- helpers ----------------------------------------------------------------------------- */

/* dwasm_task_schedule with NUL-terminated queue and payload. */
static inline int32_t dwasm_schedule_str(const char *queue, const char *payload) {
    return dwasm_task_schedule(queue, strlen(queue), payload, strlen(payload));
}

/* Wait until every one of `count` handles has finished (succeeded or failed), however long it
 * takes. Returns 0, or the negative result of await_any (DWASM_ERR_COUNT, DWASM_ERR_HANDLE).
 * The handles are awaited in order; while the flow waits for one, the host delivers every
 * outcome that has arrived, so this suspends at most once per handle still running. */
static inline int32_t dwasm_await_all(const int32_t *handles, int32_t count) {
    if (count <= 0)
        return DWASM_ERR_COUNT;
    for (int32_t i = 0; i < count; i++) {
        int32_t r = dwasm_await_any(handles + i, 1, DWASM_FOREVER);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The result of a finished handle as a malloc'ed NUL-terminated string (the payload may itself
 * contain NULs); NULL if there is none or memory is short. `*len` (if not NULL) gets its length. */
static inline char *dwasm_result_string(int32_t handle, size_t *len) {
    int32_t n = dwasm_result_len(handle);
    if (n < 0)
        return NULL;
    char *buf = (char *)malloc((size_t)n + 1);
    if (buf == NULL)
        return NULL;
    int32_t got = dwasm_result_read(handle, buf, (size_t)n);
    if (got < 0) {
        free(buf);
        return NULL;
    }
    buf[got] = '\0';
    if (len != NULL)
        *len = (size_t)got;
    return buf;
}

/* Wait for signal `name` and return its payload as a malloc'ed NUL-terminated string; NULL on
 * timeout or error (then `*err`, if not NULL, gets the negative result). */
static inline char *dwasm_signal_wait_str(const char *name, int64_t timeout_ms, int32_t *err) {
    int32_t n = dwasm_signal_wait(name, strlen(name), timeout_ms);
    if (err != NULL)
        *err = n < 0 ? n : 0;
    if (n < 0)
        return NULL;
    char *buf = (char *)malloc((size_t)n + 1);
    if (buf == NULL)
        return NULL;
    int32_t got = dwasm_signal_read(buf, (size_t)n);
    buf[got < 0 ? 0 : got] = '\0';
    return buf;
}

/* Start a child flow of `module` with `argc` NUL-terminated arguments (argv[1:] of the child). */
static inline int32_t dwasm_child_start_argv(const char *module, int argc,
                                             const char *const *argv) {
    size_t total = 0;
    for (int i = 0; i < argc; i++)
        total += strlen(argv[i]) + 1;
    char *buf = (char *)malloc(total ? total : 1);
    if (buf == NULL)
        return DWASM_ERR_TOO_LARGE;
    size_t pos = 0;
    for (int i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]) + 1;
        memcpy(buf + pos, argv[i], n);
        pos += n;
    }
    int32_t h = dwasm_child_start(module, strlen(module), buf, total);
    free(buf);
    return h;
}

#ifdef __cplusplus
}
#endif

#endif /* DWASM_H */
