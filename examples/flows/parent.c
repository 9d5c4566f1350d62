/*
 * parent: starts a child flow and reports what it did.
 *
 * Usage: parent MODULE_ID [ARGS...]. Starts a child flow of module MODULE_ID
 * ("sha256:...") with ARGS as its arguments, awaits it, and prints "child succeeded: " or
 * "child failed: " followed by the child's stdout (its stderr when it failed). Exits with 0 if
 * the child succeeded, 1 if it failed, 2 on bad usage.
 */
#include <dwasm.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: parent MODULE_ID [ARGS...]\n");
        return 2;
    }
    int32_t child = dwasm_child_start_argv(argv[1], argc - 2, (const char *const *)argv + 2);
    if (child < 0) {
        fprintf(stderr, "parent: cannot start a child of %s: %d\n", argv[1], child);
        return 2;
    }
    if (dwasm_await_any(&child, 1, DWASM_FOREVER) != 0)
        return 2;
    int ok = dwasm_handle_status(child) == DWASM_SUCCEEDED;
    size_t len = 0;
    char *out = dwasm_result_string(child, &len);
    printf("child %s: ", ok ? "succeeded" : "failed");
    fwrite(out ? out : "", 1, out ? len : 0, stdout);
    free(out);
    return ok ? 0 : 1;
}
