/* stdin → stdout (upper-cased) with a line count on stderr; a large write checks buffering. */
#include <ctype.h>
#include <stdio.h>
#include <unistd.h>

int main(void) {
    char buf[100];
    long total = 0, lines = 0;
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n')
                lines++;
            buf[i] = (char)toupper((unsigned char)buf[i]);
        }
        if (write(1, buf, (size_t)n) != n)
            return 2;
        total += n;
    }
    if (n < 0)
        return 3;
    fprintf(stderr, "read %ld bytes, %ld lines\n", total, lines);
    for (int i = 0; i < 2000; i++)
        printf("line %04d of the bulk output\n", i);
    printf("isatty(0)=%d isatty(1)=%d\n", isatty(0), isatty(1));
    return 0;
}
