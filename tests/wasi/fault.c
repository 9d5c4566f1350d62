/* Bad guest pointers passed to WASI calls: each mode must trap, never crash the host. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <wasi/api.h>

/* The raw import: the libc wrapper would run strlen on the bad pointer inside the guest. */
__attribute__((import_module("wasi_snapshot_preview1"), import_name("path_create_directory")))
int raw_path_create_directory(int fd, const char *path, int path_len);

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    __wasi_size_t n;
    if (strcmp(mode, "iovs") == 0) {
        (void)__wasi_fd_write(1, (const __wasi_ciovec_t *)0xFFFFFFF0u, 1, &n);
    } else if (strcmp(mode, "buf") == 0) {
        __wasi_ciovec_t iov = {(const uint8_t *)0xFFFFFF00u, 0x1000};
        (void)__wasi_fd_write(1, &iov, 1, &n);
    } else if (strcmp(mode, "result") == 0) {
        __wasi_ciovec_t iov = {(const uint8_t *)"x", 1};
        (void)__wasi_fd_write(1, &iov, 1, (__wasi_size_t *)0xFFFFFFFCu);
    } else if (strcmp(mode, "path") == 0) {
        (void)raw_path_create_directory(3, (const char *)0xFFFFFF00u, 0x1000);
    } else if (strcmp(mode, "args") == 0) {
        (void)__wasi_args_get((uint8_t **)0xFFFFFFF0u, (uint8_t *)0xFFFFFFF0u);
    } else if (strcmp(mode, "random") == 0) {
        (void)__wasi_random_get((uint8_t *)0xFFFFFF00u, 0x1000);
    }
    printf("no fault\n");
    return 0;
}
