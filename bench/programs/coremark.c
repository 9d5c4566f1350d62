/* A CoreMark-like mixed workload (written for dwasm, not CoreMark itself): linked-list
   search and reversal, integer matrix operations, a state machine scanning text, and CRC-16
   over the results. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct item { struct item *next; int16_t data, idx; } item;

static uint16_t crc16(uint16_t crc, uint8_t byte) {
    crc ^= byte;
    for (int i = 0; i < 8; i++) crc = (crc & 1) ? (crc >> 1) ^ 0xA001 : crc >> 1;
    return crc;
}

static uint16_t crc_u32(uint16_t crc, uint32_t v) {
    for (int i = 0; i < 4; i++) crc = crc16(crc, (uint8_t)(v >> (8 * i)));
    return crc;
}

#define NITEMS 64
static item pool[NITEMS];

static item *list_init(uint32_t seed) {
    item *head = NULL;
    for (int i = 0; i < NITEMS; i++) {
        seed = seed * 1664525u + 1013904223u;
        pool[i].data = (int16_t)(seed >> 20);
        pool[i].idx = (int16_t)i;
        pool[i].next = head;
        head = &pool[i];
    }
    return head;
}

static item *list_reverse(item *l) {
    item *prev = NULL;
    while (l) { item *n = l->next; l->next = prev; prev = l; l = n; }
    return prev;
}

static const item *list_find(const item *l, int16_t data) {
    while (l && l->data != data) l = l->next;
    return l;
}

static uint32_t list_bench(uint32_t seed) {
    item *l = list_init(seed);
    uint32_t acc = 0;
    for (int i = 0; i < 24; i++) {
        const item *f = list_find(l, pool[(i * 7) % NITEMS].data);
        acc += f ? (uint32_t)f->idx : 0xFFFF;
        l = list_reverse(l);
    }
    return acc;
}

#define MN 12
static int32_t ma[MN][MN], mb[MN][MN], mc[MN][MN];

static uint32_t matrix_bench(uint32_t seed) {
    for (int i = 0; i < MN; i++)
        for (int j = 0; j < MN; j++) {
            seed = seed * 1103515245u + 12345u;
            ma[i][j] = (int32_t)(seed >> 24) - 128;
            mb[i][j] = (int32_t)((seed >> 8) & 0xFF) - 128;
        }
    for (int i = 0; i < MN; i++)
        for (int j = 0; j < MN; j++) {
            int32_t s = 0;
            for (int k = 0; k < MN; k++) s += ma[i][k] * mb[k][j];
            mc[i][j] = s;
        }
    uint32_t acc = 0;
    for (int i = 0; i < MN; i++)
        for (int j = 0; j < MN; j++) {
            mc[i][j] += 3;
            acc += (uint32_t)mc[i][j] ^ (uint32_t)(mc[i][j] > 0 ? mc[i][j] >> 2 : -mc[i][j]);
        }
    return acc;
}

enum state { START, INT, FLOAT, EXP, SCI, INVALID };

static uint32_t state_bench(const char *text) {
    uint32_t counts[6] = {0};
    enum state s = START;
    for (const char *p = text;; p++) {
        char c = *p;
        if (c == ',' || c == 0) {
            counts[s]++;
            s = START;
            if (!c) break;
            continue;
        }
        switch (s) {
        case START: s = (c >= '0' && c <= '9') ? INT : (c == '-' || c == '+') ? INT : (c == '.') ? FLOAT : INVALID; break;
        case INT: s = (c >= '0' && c <= '9') ? INT : (c == '.') ? FLOAT : (c == 'e' || c == 'E') ? EXP : INVALID; break;
        case FLOAT: s = (c >= '0' && c <= '9') ? FLOAT : (c == 'e' || c == 'E') ? EXP : INVALID; break;
        case EXP: s = (c >= '0' && c <= '9' || c == '-' || c == '+') ? SCI : INVALID; break;
        case SCI: s = (c >= '0' && c <= '9') ? SCI : INVALID; break;
        case INVALID: break;
        }
    }
    uint32_t acc = 0;
    for (int i = 0; i < 6; i++) acc = acc * 33 + counts[i];
    return acc;
}

int main(void) {
    static const char *pieces[] = {"5012", "1234", "-874", "+122", "35.54", "0.1", "-110.7",
                                   "4e3", "-3.0e-12", "T0.3e-1F", "-T.T++Tq", "1T3.4e4z",
                                   "34.0e-T^", "2.5e+7"};
    char text[2048];
    size_t len = 0;
    for (int i = 0; len < sizeof text - 16; i++) {
        size_t n = strlen(pieces[i % 14]);
        memcpy(text + len, pieces[i % 14], n);
        len += n;
        text[len++] = ',';
    }
    text[len - 1] = 0;
    uint16_t crc = 0;
    for (int iter = 0; iter < 40; iter++) {
        crc = crc_u32(crc, list_bench((uint32_t)iter));
        crc = crc_u32(crc, matrix_bench((uint32_t)iter * 17));
        crc = crc_u32(crc, state_bench(text));
    }
    printf("coremark-like crc 0x%04x\n", crc);
    return 0;
}
