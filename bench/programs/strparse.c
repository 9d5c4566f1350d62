/* Strings and parsing: format records into text with snprintf, then tokenize the text, parse
   integers and identifiers back, and count words in a hash table. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TABLE 512

static const char *words[] = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta",
                              "theta", "iota", "kappa", "lambda", "mu"};

static uint32_t hash(const char *s, size_t n) {
    uint32_t h = 5381;
    for (size_t i = 0; i < n; i++) h = h * 33 ^ (uint8_t)s[i];
    return h;
}

int main(void) {
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    for (int i = 0; i < 1200; i++) {
        len += (size_t)snprintf(text + len, cap - len, "%s=%d;%s:%x ", words[i % 12], i * 37 - 500,
                                words[(i * 7) % 12], i * 2654435761u);
    }
    char *keys[TABLE] = {0};
    int counts[TABLE] = {0};
    long long total = 0;
    int tokens = 0;
    for (int pass = 0; pass < 2; pass++) {
        const char *p = text;
        while (*p) {
            while (*p == ' ' || *p == ';' || *p == '=' || *p == ':') p++;
            if (!*p) break;
            const char *start = p;
            if (isalpha((unsigned char)*p)) {
                while (isalpha((unsigned char)*p)) p++;
                size_t n = (size_t)(p - start);
                uint32_t slot = hash(start, n) % TABLE;
                while (keys[slot] && !(strlen(keys[slot]) == n && !strncmp(keys[slot], start, n)))
                    slot = (slot + 1) % TABLE;
                if (!keys[slot]) { keys[slot] = malloc(n + 1); memcpy(keys[slot], start, n); keys[slot][n] = 0; }
                counts[slot]++;
            } else {
                char *end;
                long v = strtol(start, &end, *start == '-' || isdigit((unsigned char)start[1]) ? 10 : 16);
                if (end == start) end++;
                total += v;
                p = end;
            }
            tokens++;
        }
    }
    long long check = total + tokens;
    for (int i = 0; i < TABLE; i++) if (keys[i]) check = check * 31 + counts[i] + (long long)strlen(keys[i]);
    printf("strparse %lld %d\n", check, tokens);
    return 0;
}
