/* File system calls through wasi-libc, in the preopened directory /sandbox (empty at start).
 * Prints one line per check with results and errno names, so runs can be compared. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <wasi/api.h>

static int failures;

#define SHOW(label, expr)                                                                   \
    do {                                                                                    \
        errno = 0;                                                                          \
        long r_ = (long)(expr);                                                             \
        printf("%-28s -> %ld%s%s\n", label, r_, r_ < 0 ? " errno=" : "",                   \
               r_ < 0 ? strerror(errno) : "");                                              \
    } while (0)

#define EXPECT(cond)                                                                        \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            printf("FAILED line %d: %s\n", __LINE__, #cond);                                \
            failures++;                                                                     \
        }                                                                                   \
    } while (0)

static int cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void list(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        printf("opendir %s failed: %s\n", dir, strerror(errno));
        return;
    }
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp);
    printf("ls %s:", dir);
    for (int i = 0; i < n; i++) {
        struct stat st;
        char path[256];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        lstat(path, &st);
        printf(" %s%s(%lld)", names[i],
               S_ISDIR(st.st_mode) ? "/" : S_ISLNK(st.st_mode) ? "@" : "",
               S_ISREG(st.st_mode) ? (long long)st.st_size : 0LL);
        free(names[i]);
    }
    printf("\n");
}

int main(void) {
    char buf[256];
    SHOW("chdir /sandbox", chdir("/sandbox"));

    /* create, write, read back */
    int fd = open("a.txt", O_CREAT | O_RDWR | O_TRUNC, 0644);
    SHOW("open a.txt", fd >= 0);
    SHOW("write", write(fd, "hello, world\n", 13));
    SHOW("lseek cur", lseek(fd, 0, SEEK_CUR));
    SHOW("lseek set 7", lseek(fd, 7, SEEK_SET));
    memset(buf, 0, sizeof buf);
    SHOW("read", read(fd, buf, 5));
    printf("  data=%s\n", buf);
    SHOW("lseek end -6", lseek(fd, -6, SEEK_END));
    SHOW("lseek negative", lseek(fd, -100, SEEK_SET));
    SHOW("pwrite at 0", pwrite(fd, "HELLO", 5, 0));
    memset(buf, 0, sizeof buf);
    SHOW("pread at 0", pread(fd, buf, 13, 0));
    printf("  data=%s", buf);
    SHOW("tell after pread", lseek(fd, 0, SEEK_CUR));
    SHOW("pwrite past end", pwrite(fd, "!", 1, 20));
    struct stat st;
    SHOW("fstat", fstat(fd, &st));
    printf("  size=%lld reg=%d nlink=%d\n", (long long)st.st_size, S_ISREG(st.st_mode),
           (int)st.st_nlink);
    SHOW("ftruncate 5", ftruncate(fd, 5));
    SHOW("fstat again", fstat(fd, &st));
    printf("  size=%lld\n", (long long)st.st_size);
    SHOW("fsync", fsync(fd));
    SHOW("fdatasync", fdatasync(fd));
    SHOW("posix_fadvise", posix_fadvise(fd, 0, 5, POSIX_FADV_SEQUENTIAL));
    SHOW("close", close(fd));
    SHOW("close again", close(fd));

    /* O_APPEND, fcntl flags */
    fd = open("a.txt", O_WRONLY | O_APPEND);
    SHOW("open append", fd >= 0);
    SHOW("F_GETFL has O_APPEND", (fcntl(fd, F_GETFL) & O_APPEND) != 0);
    SHOW("append write", write(fd, "-tail", 5));
    SHOW("append offset", lseek(fd, 0, SEEK_CUR));
    SHOW("F_SETFL clear append", fcntl(fd, F_SETFL, 0));
    SHOW("F_GETFL has O_APPEND", (fcntl(fd, F_GETFL) & O_APPEND) != 0);
    SHOW("lseek 0", lseek(fd, 0, SEEK_SET));
    SHOW("overwrite write", write(fd, "J", 1));
    SHOW("read on write-only", read(fd, buf, 1));
    close(fd);
    FILE *f = fopen("a.txt", "r");
    memset(buf, 0, sizeof buf);
    SHOW("fread", fread(buf, 1, sizeof buf - 1, f));
    printf("  data=%s\n", buf);
    fclose(f);
    fd = open("a.txt", O_RDONLY);
    SHOW("write on read-only", write(fd, "x", 1));
    close(fd);

    /* O_EXCL, O_TRUNC, O_DIRECTORY, missing files */
    SHOW("open excl existing", open("a.txt", O_CREAT | O_EXCL | O_WRONLY, 0644));
    fd = open("b.txt", O_CREAT | O_EXCL | O_WRONLY, 0644);
    SHOW("open excl new", fd >= 0);
    SHOW("write b", write(fd, "0123456789", 10));
    close(fd);
    fd = open("b.txt", O_WRONLY | O_TRUNC);
    SHOW("open trunc", fd >= 0);
    SHOW("fstat trunc", fstat(fd, &st));
    printf("  size=%lld\n", (long long)st.st_size);
    SHOW("write b again", write(fd, "xyz", 3));
    close(fd);
    SHOW("open missing", open("missing.txt", O_RDONLY));
    SHOW("open file O_DIRECTORY", open("a.txt", O_RDONLY | O_DIRECTORY));
    SHOW("open file/ trailing", open("a.txt/", O_RDONLY));

    /* directories */
    SHOW("mkdir d", mkdir("d", 0755));
    SHOW("mkdir d again", mkdir("d", 0755));
    SHOW("mkdir d/e", mkdir("d/e", 0755));
    SHOW("mkdir missing/x", mkdir("missing/x", 0755));
    fd = open("d/e/f.txt", O_CREAT | O_WRONLY, 0644);
    SHOW("create d/e/f.txt", fd >= 0);
    close(fd);
    SHOW("rmdir d/e non-empty", rmdir("d/e"));
    SHOW("rmdir file", rmdir("a.txt"));
    SHOW("unlink dir", unlink("d"));
    SHOW("stat d", stat("d", &st));
    printf("  dir=%d\n", S_ISDIR(st.st_mode));
    SHOW("open dir O_DIRECTORY", (fd = open("d", O_RDONLY | O_DIRECTORY)) >= 0);
    SHOW("read dir fd", read(fd, buf, 1));
    SHOW("openat via dir fd", (fd = openat(fd, "e/f.txt", O_RDONLY)) >= 0);
    close(fd);
    SHOW("open dir for write", open("d", O_WRONLY));
    list(".");
    list("d");

    /* rename */
    SHOW("rename b->c", rename("b.txt", "c.txt"));
    SHOW("rename missing", rename("b.txt", "c.txt"));
    SHOW("rename over file", rename("c.txt", "a2.txt"));
    SHOW("rename dir", rename("d", "dd"));
    SHOW("rename file over dir", rename("a2.txt", "dd"));
    SHOW("rename into dir", rename("a2.txt", "dd/a2.txt"));
    SHOW("rename dir into self", rename("dd", "dd/e/x"));
    list(".");
    list("dd");

    /* symlinks */
    SHOW("symlink", symlink("a.txt", "link"));
    SHOW("symlink exists", symlink("a.txt", "link"));
    SHOW("symlink dangling", symlink("nowhere", "dangling"));
    SHOW("symlink to dir", symlink("dd/e", "dirlink"));
    memset(buf, 0, sizeof buf);
    SHOW("readlink", readlink("link", buf, sizeof buf));
    printf("  target=%s\n", buf);
    memset(buf, 0, sizeof buf);
    SHOW("readlink short", readlink("link", buf, 3));
    printf("  target=%s\n", buf);
    SHOW("readlink non-link", readlink("a.txt", buf, sizeof buf));
    SHOW("lstat link", lstat("link", &st));
    printf("  lnk=%d size=%lld\n", S_ISLNK(st.st_mode), (long long)st.st_size);
    SHOW("stat link", stat("link", &st));
    printf("  reg=%d size=%lld\n", S_ISREG(st.st_mode), (long long)st.st_size);
    SHOW("stat dangling", stat("dangling", &st));
    fd = open("link", O_RDONLY);
    memset(buf, 0, sizeof buf);
    SHOW("read through link", read(fd, buf, 100));
    printf("  data=%s\n", buf);
    close(fd);
    SHOW("open link O_NOFOLLOW", open("link", O_RDONLY | O_NOFOLLOW));
    SHOW("open via dirlink", (fd = open("dirlink/f.txt", O_RDONLY)) >= 0);
    close(fd);
    fd = open("dangling", O_CREAT | O_WRONLY, 0644);
    SHOW("create through dangling", fd >= 0);
    close(fd);
    SHOW("stat nowhere", stat("nowhere", &st));
    SHOW("unlink link", unlink("link"));
    SHOW("stat a.txt after", stat("a.txt", &st));

    /* hard links */
    SHOW("link", link("a.txt", "hard"));
    SHOW("link exists", link("a.txt", "hard"));
    SHOW("stat nlink", stat("a.txt", &st));
    printf("  nlink=%d\n", (int)st.st_nlink);
    SHOW("link dir", link("dd", "ddlink"));
    SHOW("unlink hard", unlink("hard"));
    SHOW("unlink hard again", unlink("hard"));
    SHOW("stat nlink", stat("a.txt", &st));
    printf("  nlink=%d\n", (int)st.st_nlink);

    /* times */
    struct timespec ts[2] = {{1000000000, 5}, {1200000000, 123456789}};
    SHOW("utimensat", utimensat(AT_FDCWD, "a.txt", ts, 0));
    SHOW("stat times", stat("a.txt", &st));
    printf("  atime=%lld.%09ld mtime=%lld.%09ld\n", (long long)st.st_atim.tv_sec,
           st.st_atim.tv_nsec, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    struct timespec omit[2] = {{0, UTIME_OMIT}, {1300000000, 0}};
    SHOW("utimensat omit atime", utimensat(AT_FDCWD, "a.txt", omit, 0));
    stat("a.txt", &st);
    printf("  atime=%lld mtime=%lld\n", (long long)st.st_atim.tv_sec,
           (long long)st.st_mtim.tv_sec);
    /* The raw call: this wasi-libc's futimens/utimensat encode UTIME_NOW incorrectly. */
    fd = open("a.txt", O_RDONLY);
    SHOW("set_times now", __wasi_fd_filestat_set_times(
                              fd, 0, 0, __WASI_FSTFLAGS_ATIM_NOW | __WASI_FSTFLAGS_MTIM_NOW));
    SHOW("set_times atim+now", __wasi_fd_filestat_set_times(
                                   fd, 0, 0, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_ATIM_NOW));
    fstat(fd, &st);
    EXPECT(st.st_atim.tv_sec > 1600000000);
    EXPECT(st.st_mtim.tv_sec > 1600000000);
    close(fd);

    /* cleanup */
    SHOW("unlink dd/e/f.txt", unlink("dd/e/f.txt"));
    SHOW("rmdir dd/e", rmdir("dd/e"));
    SHOW("unlink trailing slash", unlink("a.txt/"));
    list(".");
    printf("failures=%d\n", failures);
    return failures ? 1 : 0;
}
