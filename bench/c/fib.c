/* Recursive kernel: doubly recursive Fibonacci, measuring call and return overhead.
 *
 * fib(n) performs about 1.6^n calls; each call is a handful of instructions, so this
 * benchmark is dominated by frame setup and teardown in the engine.
 */

int fib(int n) {
    if (n < 2)
        return n;
    return fib(n - 1) + fib(n - 2);
}

/* Sum of fib(0..n): several recursion depths in one run. */
int fib_sum(int n) {
    int total = 0;
    for (int i = 0; i <= n; i++)
        total += fib(i);
    return total;
}
