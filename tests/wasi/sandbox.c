/* Escape attempts through the raw WASI calls, from the preopen /sandbox (fd 3). The host test
 * lays out: file, sub/inner, out -> ../secret, abs -> /<absolute path of secret>, loop -> loop,
 * loop2a <-> loop2b, subout -> sub/../.., dirlink -> sub. Every line prints the errno. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <wasi/api.h>

#define ROOT 3
#define FOLLOW __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW

static __wasi_fd_t last_fd;

static int open_at(__wasi_fd_t dir, const char *path, int follow, int oflags) {
    last_fd = (__wasi_fd_t)-1;
    return __wasi_path_open(dir, follow ? FOLLOW : 0, path, oflags,
                            __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_READDIR |
                                __WASI_RIGHTS_PATH_OPEN | __WASI_RIGHTS_FD_FILESTAT_GET,
                            (__wasi_rights_t)((1u << 30) - 1), 0, &last_fd);
}

static void show_open(__wasi_fd_t dir, const char *path, int follow, int oflags) {
    int e = open_at(dir, path, follow, oflags);
    printf("open(%d, %-22s follow=%d) -> %d\n", (int)dir, path, follow, e);
    if (e == 0)
        (void)__wasi_fd_close(last_fd);
}

int main(void) {
    show_open(ROOT, "file", 0, 0);
    show_open(ROOT, "../secret", 1, 0);
    show_open(ROOT, "..", 1, __WASI_OFLAGS_DIRECTORY);
    show_open(ROOT, "/etc/passwd", 1, 0);
    show_open(ROOT, "/", 1, __WASI_OFLAGS_DIRECTORY);
    show_open(ROOT, "sub/../../secret", 1, 0);
    show_open(ROOT, "sub/../file", 1, 0);
    show_open(ROOT, "sub/..", 1, __WASI_OFLAGS_DIRECTORY);
    show_open(ROOT, ".", 1, __WASI_OFLAGS_DIRECTORY);
    show_open(ROOT, "out", 1, 0);
    show_open(ROOT, "out", 0, 0);
    show_open(ROOT, "out/x", 1, 0);
    show_open(ROOT, "abs", 1, 0);
    show_open(ROOT, "abs", 0, 0);
    show_open(ROOT, "loop", 1, 0);
    show_open(ROOT, "loop", 0, 0);
    show_open(ROOT, "loop2a", 1, 0);
    show_open(ROOT, "loop/x", 0, 0);
    show_open(ROOT, "subout/secret", 1, 0);
    show_open(ROOT, "subout", 1, __WASI_OFLAGS_DIRECTORY);
    show_open(ROOT, "dirlink/inner", 0, 0);
    show_open(ROOT, "dirlink/../file", 0, 0);
    show_open(ROOT, "dirlink/../../secret", 0, 0);
    show_open(ROOT, "missing/../file", 0, 0);
    show_open(ROOT, "file/..", 0, 0);
    show_open(ROOT, "", 0, 0);

    /* A directory fd is its own sandbox: ".." cannot leave it. */
    int e = open_at(ROOT, "sub", 0, __WASI_OFLAGS_DIRECTORY);
    __wasi_fd_t sub = last_fd;
    printf("open sub -> %d\n", e);
    show_open(sub, "inner", 0, 0);
    show_open(sub, "../file", 0, 0);
    show_open(sub, ".", 0, __WASI_OFLAGS_DIRECTORY);

    __wasi_filestat_t st;
    printf("stat out follow -> %d\n", __wasi_path_filestat_get(ROOT, FOLLOW, "out", &st));
    memset(&st, 0, sizeof st);
    printf("stat out nofollow -> %d type=%d\n", __wasi_path_filestat_get(ROOT, 0, "out", &st),
           st.filetype);
    printf("stat ../secret -> %d\n", __wasi_path_filestat_get(ROOT, 0, "../secret", &st));
    printf("stat sub/../.. -> %d\n", __wasi_path_filestat_get(ROOT, 0, "sub/../..", &st));
    char buf[64] = {0};
    __wasi_size_t n = 0;
    printf("readlink out -> %d", __wasi_path_readlink(ROOT, "out", (uint8_t *)buf, 63, &n));
    printf(" %.*s\n", (int)n, buf);
    printf("readlink ../x -> %d\n", __wasi_path_readlink(ROOT, "../x", (uint8_t *)buf, 63, &n));
    printf("set_times out follow -> %d\n",
           __wasi_path_filestat_set_times(ROOT, FOLLOW, "out", 0, 0, __WASI_FSTFLAGS_MTIM));
    printf("mkdir ../made -> %d\n", __wasi_path_create_directory(ROOT, "../made"));
    printf("mkdir out/made -> %d\n", __wasi_path_create_directory(ROOT, "out/made"));
    printf("mkdir subout/made -> %d\n", __wasi_path_create_directory(ROOT, "subout/made"));
    printf("rmdir .. -> %d\n", __wasi_path_remove_directory(ROOT, ".."));
    printf("rmdir . -> %d\n", __wasi_path_remove_directory(ROOT, "."));
    printf("unlink ../secret -> %d\n", __wasi_path_unlink_file(ROOT, "../secret"));
    printf("unlink subout/secret -> %d\n", __wasi_path_unlink_file(ROOT, "subout/secret"));
    printf("rename file ../stolen -> %d\n", __wasi_path_rename(ROOT, "file", ROOT, "../stolen"));
    printf("rename ../secret mine -> %d\n", __wasi_path_rename(ROOT, "../secret", ROOT, "mine"));
    printf("link file ../hard -> %d\n", __wasi_path_link(ROOT, 0, "file", ROOT, "../hard"));
    printf("link out hl follow -> %d\n", __wasi_path_link(ROOT, FOLLOW, "out", ROOT, "hl"));
    printf("link ../secret hl2 -> %d\n", __wasi_path_link(ROOT, 0, "../secret", ROOT, "hl2"));
    printf("symlink /etc/passwd -> %d\n", __wasi_path_symlink("/etc/passwd", ROOT, "newabs"));
    printf("symlink ../secret newrel -> %d\n", __wasi_path_symlink("../secret", ROOT, "newrel"));
    show_open(ROOT, "newrel", 1, 0);
    printf("symlink in ../ -> %d\n", __wasi_path_symlink("file", ROOT, "../evil"));
    show_open(ROOT, "newfile", 1, __WASI_OFLAGS_CREAT);
    show_open(ROOT, "../newfile", 1, __WASI_OFLAGS_CREAT);
    show_open(ROOT, "out", 1, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC);

    /* Through wasi-libc: absolute paths are mapped onto preopens by libc itself. */
    FILE *f = fopen("/etc/passwd", "r");
    printf("fopen /etc/passwd -> %s\n", f ? "opened" : "failed");
    f = fopen("/sandbox/../secret", "r");
    printf("fopen /sandbox/../secret -> %s\n", f ? "opened" : "failed");
    f = fopen("/sandbox/out", "r");
    printf("fopen /sandbox/out -> %s\n", f ? "opened" : "failed");
    return 0;
}
