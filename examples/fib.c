/* Naive recursive Fibonacci: a small, call-heavy example for `dwasm run`.
 *
 * Build (see the Makefile): clang --target=wasm32 -nostdlib -Wl,--no-entry -Wl,--export-all -O2
 * Run:   scripts/dwasm run --invoke fib examples/fib.wasm 25     -> 75025
 */

int fib(int n) {
    if (n < 2)
        return n;
    return fib(n - 1) + fib(n - 2);
}
