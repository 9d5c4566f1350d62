/*
 * hello: the smallest flow, a plain WASI command with no durable calls.
 *
 * Reads its name from stdin (trailing whitespace dropped; "world" when stdin is empty), or from
 * argv[1] when stdin is empty and an argument is given, prints "Hello, NAME!" and exits with 0.
 */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    static char name[4096];
    size_t n = fread(name, 1, sizeof name - 1, stdin);
    while (n > 0 && (name[n - 1] == '\n' || name[n - 1] == '\r' || name[n - 1] == ' ' ||
                     name[n - 1] == '\t'))
        n--;
    name[n] = '\0';
    const char *who = n > 0 ? name : (argc > 1 ? argv[1] : "world");
    printf("Hello, %s!\n", who);
    return 0;
}
