# Build the committed .wasm files from their C sources and run the speed benchmark.
#
# The .wasm files are committed next to their sources, so tests and users need no compiler;
# run `make wasm` after editing a .c file. -ffreestanding keeps clang from turning loops into
# calls to memset/memcpy, which do not exist without a libc.
# Needs clang with the wasm32 target and wasm-ld (lld).

CLANG ?= clang
PYTHON ?= python3
WASM_CFLAGS = --target=wasm32 -ffreestanding -nostdlib -Wl,--no-entry -Wl,--export-all -O2
# WASI test programs are ordinary C programs against wasi-libc (Debian: wasi-libc, lld,
# libclang-rt-14-dev-wasm32); --strip-all drops the name section to keep the committed files small.
WASI_CFLAGS = --target=wasm32-wasi -O2 -Wl,--strip-all

EXAMPLE_WASM = $(patsubst %.c,%.wasm,$(wildcard examples/*.c))
BENCH_WASM = $(patsubst %.c,%.wasm,$(wildcard bench/c/*.c))
WASI_TEST_WASM = $(patsubst %.c,%.wasm,$(wildcard tests/wasi/*.c tests/durable/*.c))
# Flows: WASI commands that also import the dwasm module (sdk/c/dwasm.h, docs/guest-abi.md).
FLOW_WASM = $(patsubst %.c,%.wasm,$(wildcard examples/flows/*.c))

.PHONY: wasm examples bench-wasm bench wasi-tests flows

wasm: examples bench-wasm wasi-tests flows

examples: $(EXAMPLE_WASM)

# Whole programs for bench/programs.py: WASI commands against wasi-libc, and a generated 2 MB
# module for the start-up benchmark (its C source is only written to a temporary directory).
PROGRAM_WASM = $(patsubst %.c,%.wasm,$(wildcard bench/programs/*.c)) bench/programs/big.wasm

bench-wasm: $(BENCH_WASM) $(PROGRAM_WASM)

bench/programs/%.wasm: bench/programs/%.c
	$(CLANG) $(WASI_CFLAGS) -o $@ $<

bench/programs/big.wasm: bench/programs/gen_big.py
	tmp=$$(mktemp -d) && $(PYTHON) $< > $$tmp/big.c && $(CLANG) $(WASI_CFLAGS) -Wno-format -o $@ $$tmp/big.c; \
	rc=$$?; rm -rf "$$tmp"; exit $$rc

wasi-tests: $(WASI_TEST_WASM)

flows: $(FLOW_WASM)

tests/wasi/%.wasm: tests/wasi/%.c
	$(CLANG) $(WASI_CFLAGS) -o $@ $<

tests/durable/%.wasm: tests/durable/%.c
	$(CLANG) $(WASI_CFLAGS) -o $@ $<

examples/flows/%.wasm: examples/flows/%.c sdk/c/dwasm.h
	$(CLANG) $(WASI_CFLAGS) -Wall -Wextra -I sdk/c -o $@ $<

%.wasm: %.c
	$(CLANG) $(WASM_CFLAGS) -o $@ $<

# The SIMD kernels use 128-bit vector instructions (wasm_simd128.h).
bench/c/simd_%.wasm: WASM_CFLAGS += -msimd128

# Uses the committed .wasm files as they are, so that it needs no compiler (after a checkout the
# .c files may look newer than their .wasm files).
bench:
	$(PYTHON) bench/vs_pywasm.py $(BENCH_ARGS)
