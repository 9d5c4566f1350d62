/* dwasm's own semantics where wasmtime differs or is silent: errno of every kind mismatch,
 * rights, fd_allocate, fd_renumber, readdir cookies, poll errors, CPU clocks, sockets.
 * Self-checking: prints FAILED lines and exits 1 on any mismatch. /sandbox holds data.txt. */
#include <stdio.h>
#include <string.h>
#include <wasi/api.h>

__attribute__((import_module("wasi_snapshot_preview1"), import_name("proc_raise")))
int raw_proc_raise(int sig);
__attribute__((import_module("wasi_snapshot_preview1"), import_name("path_open")))
int raw_path_open(int fd, int dirflags, const char *path, int path_len, int oflags,
                  long long base, long long inheriting, int fdflags, int *result);

static int failures;

#define CHECK(expr, want)                                                                   \
    do {                                                                                    \
        long long got_ = (long long)(expr);                                                 \
        if (got_ != (long long)(want)) {                                                    \
            printf("FAILED line %d: %s = %lld, want %lld\n", __LINE__, #expr, got_,         \
                   (long long)(want));                                                      \
            failures++;                                                                     \
        }                                                                                   \
    } while (0)

#define RW (__WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_WRITE | __WASI_RIGHTS_FD_SEEK |        \
            __WASI_RIGHTS_FD_TELL | __WASI_RIGHTS_FD_ALLOCATE | __WASI_RIGHTS_FD_FILESTAT_GET | \
            __WASI_RIGHTS_FD_FDSTAT_SET_FLAGS | __WASI_RIGHTS_POLL_FD_READWRITE)

static __wasi_fd_t open_file(__wasi_fd_t dir, const char *path, __wasi_oflags_t oflags,
                             __wasi_rights_t base, __wasi_errno_t want) {
    __wasi_fd_t fd = (__wasi_fd_t)-1;
    CHECK(__wasi_path_open(dir, 0, path, oflags, base, base, 0, &fd), want);
    return fd;
}

int main(void) {
    uint8_t buf[64];
    __wasi_size_t n = 0;
    __wasi_filesize_t pos;
    __wasi_iovec_t iov = {buf, sizeof buf};
    __wasi_ciovec_t ciov = {(const uint8_t *)"abc", 3};

    /* kind mismatches */
    CHECK(__wasi_fd_read(99, &iov, 1, &n), __WASI_ERRNO_BADF);
    CHECK(__wasi_fd_write(0, &ciov, 1, &n), __WASI_ERRNO_BADF);
    CHECK(__wasi_fd_read(1, &iov, 1, &n), __WASI_ERRNO_BADF);
    CHECK(__wasi_fd_seek(1, 0, __WASI_WHENCE_CUR, &pos), __WASI_ERRNO_SPIPE);
    CHECK(__wasi_fd_tell(0, &pos), __WASI_ERRNO_SPIPE);
    CHECK(__wasi_fd_pread(0, &iov, 1, 0, &n), __WASI_ERRNO_SPIPE);
    CHECK(__wasi_fd_pwrite(1, &ciov, 1, 0, &n), __WASI_ERRNO_SPIPE);
    CHECK(__wasi_fd_seek(3, 0, __WASI_WHENCE_SET, &pos), __WASI_ERRNO_BADF);
    CHECK(__wasi_fd_read(3, &iov, 1, &n), __WASI_ERRNO_BADF);
    CHECK(__wasi_fd_seek(99, 0, 7, &pos), __WASI_ERRNO_INVAL);

    /* prestat */
    __wasi_prestat_t pre;
    CHECK(__wasi_fd_prestat_get(0, &pre), __WASI_ERRNO_BADF);
    CHECK(__wasi_fd_prestat_get(3, &pre), 0);
    CHECK(pre.tag, __WASI_PREOPENTYPE_DIR);
    CHECK(pre.u.dir.pr_name_len, 8);
    memset(buf, 0, sizeof buf);
    CHECK(__wasi_fd_prestat_dir_name(3, buf, 8), 0);
    CHECK(memcmp(buf, "/sandbox", 8), 0);
    CHECK(__wasi_fd_prestat_dir_name(3, buf, 3), __WASI_ERRNO_NAMETOOLONG);
    CHECK(__wasi_fd_prestat_dir_name(1, buf, 8), __WASI_ERRNO_NOTDIR);
    CHECK(__wasi_fd_prestat_get(4, &pre), __WASI_ERRNO_BADF);

    /* proc, sched, sockets, clocks */
    CHECK(raw_proc_raise(9), __WASI_ERRNO_NOTSUP);
    CHECK(__wasi_sched_yield(), 0);
    __wasi_fd_t sfd;
    __wasi_roflags_t ro;
    CHECK(__wasi_sock_accept(1, 0, &sfd), __WASI_ERRNO_NOTSOCK);
    CHECK(__wasi_sock_accept(99, 0, &sfd), __WASI_ERRNO_BADF);
    CHECK(__wasi_sock_recv(0, &iov, 1, 0, &n, &ro), __WASI_ERRNO_NOTSOCK);
    CHECK(__wasi_sock_send(1, &ciov, 1, 0, &n), __WASI_ERRNO_NOTSOCK);
    CHECK(__wasi_sock_shutdown(3, __WASI_SDFLAGS_WR), __WASI_ERRNO_NOTSOCK);
    CHECK(__wasi_sock_shutdown(99, __WASI_SDFLAGS_WR), __WASI_ERRNO_BADF);
    __wasi_timestamp_t t1, t2;
    CHECK(__wasi_clock_time_get(99, 0, &t1), __WASI_ERRNO_INVAL);
    CHECK(__wasi_clock_res_get(99, &t1), __WASI_ERRNO_INVAL);
    CHECK(__wasi_clock_time_get(__WASI_CLOCKID_PROCESS_CPUTIME_ID, 0, &t1), 0);
    volatile unsigned spin = 0;
    for (int i = 0; i < 200000; i++)
        spin += (unsigned)i;
    CHECK(__wasi_clock_time_get(__WASI_CLOCKID_THREAD_CPUTIME_ID, 0, &t2), 0);
    CHECK(t2 > t1, 1);
    CHECK(__wasi_clock_res_get(__WASI_CLOCKID_PROCESS_CPUTIME_ID, &t1), 0);

    /* stdio fdstat */
    __wasi_fdstat_t fs;
    CHECK(__wasi_fd_fdstat_get(1, &fs), 0);
    CHECK((fs.fs_rights_base & __WASI_RIGHTS_FD_WRITE) != 0, 1);
    CHECK((fs.fs_rights_base & __WASI_RIGHTS_FD_SEEK) != 0, 0);
    CHECK(__wasi_fd_fdstat_get(3, &fs), 0);
    CHECK(fs.fs_filetype, __WASI_FILETYPE_DIRECTORY);

    /* rights */
    __wasi_fd_t fd = open_file(3, "data.txt", 0, RW, 0);
    CHECK(fd, 4);
    CHECK(__wasi_fd_fdstat_get(fd, &fs), 0);
    CHECK(fs.fs_filetype, __WASI_FILETYPE_REGULAR_FILE);
    CHECK(fs.fs_rights_base, RW);
    CHECK(__wasi_fd_fdstat_set_rights(fd, RW & ~__WASI_RIGHTS_FD_WRITE & ~__WASI_RIGHTS_FD_SEEK,
                                      0), 0);
    CHECK(__wasi_fd_write(fd, &ciov, 1, &n), __WASI_ERRNO_NOTCAPABLE);
    CHECK(__wasi_fd_seek(fd, 0, __WASI_WHENCE_CUR, &pos), 0);
    CHECK(__wasi_fd_seek(fd, 1, __WASI_WHENCE_SET, &pos), __WASI_ERRNO_NOTCAPABLE);
    CHECK(__wasi_fd_fdstat_set_rights(fd, RW, 0), __WASI_ERRNO_NOTCAPABLE);
    CHECK(__wasi_fd_read(fd, &iov, 1, &n), 0);
    CHECK(n, 10);
    CHECK(__wasi_fd_close(fd), 0);

    /* a directory whose inheriting rights lack FD_WRITE hands out read-only files */
    __wasi_fd_t dir = (__wasi_fd_t)-1;
    CHECK(__wasi_path_open(3, 0, ".", __WASI_OFLAGS_DIRECTORY,
                           __WASI_RIGHTS_PATH_OPEN | __WASI_RIGHTS_FD_READDIR,
                           __WASI_RIGHTS_FD_READ, 0, &dir), 0);
    fd = open_file(dir, "data.txt", 0, RW, 0);
    CHECK(__wasi_fd_fdstat_get(fd, &fs), 0);
    CHECK(fs.fs_rights_base, __WASI_RIGHTS_FD_READ);
    CHECK(__wasi_fd_write(fd, &ciov, 1, &n), __WASI_ERRNO_BADF);
    CHECK(__wasi_fd_close(fd), 0);
    CHECK(__wasi_path_create_directory(dir, "nope"), __WASI_ERRNO_NOTCAPABLE);
    CHECK(__wasi_fd_close(dir), 0);

    /* fd_allocate, fd_renumber, fdstat flags */
    fd = open_file(3, "alloc.bin", __WASI_OFLAGS_CREAT, RW, 0);
    CHECK(__wasi_fd_allocate(fd, 100, 28), 0);
    __wasi_filestat_t st;
    CHECK(__wasi_fd_filestat_get(fd, &st), 0);
    CHECK(st.size, 128);
    CHECK(__wasi_fd_allocate(fd, 0, 10), 0);
    CHECK(__wasi_fd_filestat_get(fd, &st), 0);
    CHECK(st.size, 128);
    CHECK(__wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_DSYNC), __WASI_ERRNO_INVAL);
    CHECK(__wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_APPEND), 0);
    CHECK(__wasi_fd_write(fd, &ciov, 1, &n), 0);
    CHECK(__wasi_fd_tell(fd, &pos), 0);
    CHECK(pos, 131);
    CHECK(__wasi_fd_renumber(fd, 10), 0);
    CHECK(__wasi_fd_tell(fd, &pos), __WASI_ERRNO_BADF);
    CHECK(__wasi_fd_tell(10, &pos), 0);
    CHECK(pos, 131);
    CHECK(__wasi_fd_renumber(99, 11), __WASI_ERRNO_BADF);
    CHECK(__wasi_fd_advise(10, 0, 0, 9), __WASI_ERRNO_INVAL);
    CHECK(__wasi_fd_advise(10, 0, 0, __WASI_ADVICE_RANDOM), __WASI_ERRNO_NOTCAPABLE);
    CHECK(__wasi_fd_readdir(10, buf, sizeof buf, 0, &n), __WASI_ERRNO_NOTDIR);
    __wasi_fd_t other;
    CHECK(__wasi_path_open(10, 0, "x", 0, RW, RW, 0, &other), __WASI_ERRNO_NOTDIR);
    CHECK(raw_path_open(3, 0, "data.txt", 8, 1 << 5, RW, RW, 0, (int *)&other),
          __WASI_ERRNO_INVAL);
    CHECK(raw_path_open(3, 0, "data.txt", 8, 0, RW, RW, 1 << 6, (int *)&other),
          __WASI_ERRNO_INVAL);
    CHECK(__wasi_fd_close(10), 0);

    /* readdir cookies: . .. alloc.bin data.txt */
    CHECK(__wasi_fd_readdir(3, buf, 10, 0, &n), 0);
    CHECK(n, 10);
    CHECK(__wasi_fd_readdir(3, buf, sizeof buf, 4, &n), 0);
    CHECK(n, 0);
    CHECK(__wasi_fd_readdir(3, buf, sizeof buf, 3, &n), 0);
    CHECK(n, 24 + 8);
    CHECK(memcmp(buf + 24, "data.txt", 8), 0);
    CHECK(((__wasi_dirent_t *)buf)->d_next, 4);
    CHECK(((__wasi_dirent_t *)buf)->d_type, __WASI_FILETYPE_REGULAR_FILE);

    /* path_link following a symlink inside the sandbox */
    CHECK(__wasi_path_symlink("data.txt", 3, "ln"), 0);
    CHECK(__wasi_path_link(3, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "ln", 3, "hard"), 0);
    CHECK(__wasi_path_filestat_get(3, 0, "hard", &st), 0);
    CHECK(st.filetype, __WASI_FILETYPE_REGULAR_FILE);
    CHECK(st.nlink, 2);

    /* poll: per-subscription errors */
    __wasi_subscription_t subs[3];
    __wasi_event_t ev[3];
    memset(subs, 0, sizeof subs);
    subs[0].userdata = 1;
    subs[0].u.tag = __WASI_EVENTTYPE_FD_READ;
    subs[0].u.u.fd_read.file_descriptor = 99;
    subs[1].userdata = 2;
    subs[1].u.tag = __WASI_EVENTTYPE_FD_READ;
    subs[1].u.u.fd_read.file_descriptor = 3;
    subs[2].userdata = 3;
    subs[2].u.tag = __WASI_EVENTTYPE_CLOCK;
    subs[2].u.u.clock.id = __WASI_CLOCKID_PROCESS_CPUTIME_ID;
    CHECK(__wasi_poll_oneoff(subs, ev, 3, &n), 0);
    CHECK(n, 3);
    CHECK(ev[0].error, __WASI_ERRNO_BADF);
    CHECK(ev[1].error, __WASI_ERRNO_BADF);
    CHECK(ev[2].error, __WASI_ERRNO_INVAL);
    subs[0].u.u.fd_read.file_descriptor = 0;
    CHECK(__wasi_poll_oneoff(subs, ev, 1, &n), 0);
    CHECK(n, 1);
    CHECK(ev[0].error, 0);
    CHECK(ev[0].fd_readwrite.nbytes, 5);

    /* closing stdin */
    CHECK(__wasi_fd_close(0), 0);
    CHECK(__wasi_fd_read(0, &iov, 1, &n), __WASI_ERRNO_BADF);
    CHECK(open_file(3, "data.txt", 0, RW, 0), 0);

    printf("failures=%d\n", failures);
    return failures ? 1 : 0;
}
