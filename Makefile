# Build the committed .wasm files from their C sources and run the speed benchmark.
#
# The .wasm files are committed next to their sources, so tests and users need no compiler;
# run `make wasm` after editing a .c file. -ffreestanding keeps clang from turning loops into
# calls to memset/memcpy, which do not exist without a libc.
# Needs clang with the wasm32 target and wasm-ld (lld).

CLANG ?= clang
PYTHON ?= python3
WASM_CFLAGS = --target=wasm32 -ffreestanding -nostdlib -Wl,--no-entry -Wl,--export-all -O2

EXAMPLE_WASM = $(patsubst %.c,%.wasm,$(wildcard examples/*.c))
BENCH_WASM = $(patsubst %.c,%.wasm,$(wildcard bench/c/*.c))

.PHONY: wasm examples bench-wasm bench

wasm: examples bench-wasm

examples: $(EXAMPLE_WASM)

bench-wasm: $(BENCH_WASM)

%.wasm: %.c
	$(CLANG) $(WASM_CFLAGS) -o $@ $<

# Uses the committed .wasm files as they are, so that it needs no compiler (after a checkout the
# .c files may look newer than their .wasm files).
bench:
	$(PYTHON) bench/vs_pywasm.py $(BENCH_ARGS)
