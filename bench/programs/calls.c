/* Recursion and indirect calls: a binary tree built and walked recursively, an expression
   evaluator dispatching through function pointers, and recursive fib. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct node { struct node *l, *r; int v; } node;

static node *build(int depth, int *next) {
    if (depth == 0) return NULL;
    node *n = malloc(sizeof *n);
    n->v = (*next)++;
    n->l = build(depth - 1, next);
    n->r = build(depth - 1, next);
    return n;
}

static int64_t walk(const node *n, int64_t (*f)(int64_t, int)) {
    if (!n) return 0;
    return f(walk(n->l, f) + walk(n->r, f), n->v);
}

static int64_t op_add(int64_t a, int b) { return a + b; }
static int64_t op_xor(int64_t a, int b) { return a ^ (b * 2654435761u); }
static int64_t op_mix(int64_t a, int b) { return a * 31 + b; }

static void release(node *n) { if (n) { release(n->l); release(n->r); free(n); } }

static int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int main(void) {
    int64_t (*ops[3])(int64_t, int) = {op_add, op_xor, op_mix};
    int64_t check = 0;
    for (int round = 0; round < 6; round++) {
        int next = 0;
        node *t = build(12, &next);
        check += walk(t, ops[round % 3]);
        release(t);
    }
    check += fib(22);
    printf("calls %lld\n", (long long)check);
    return 0;
}
