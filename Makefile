# moeq: one library (libmoeq.a) and thin tools on top. All build output goes to build/ and bin/.
#   make            build bin/moeq (release)
#   make test       unit + CLI tests, then the same under ASan+UBSan; ends "N passed, N failed"
#   make demo       inspect + eval on the bundled tiny model
#   make fuzz       libFuzzer targets, FUZZ_SECONDS each (clang)
#   make bench      benchmarks that print measured ratios
#   make bench-memory  peak RSS of every command on a 28.6 GB checkpoint (BENCH_MODEL=/work/big/q15)
#   make bench-mpi  spectral, calibrate and GPTQ over 2 MPI ranks against one process
CC       ?= cc
BUILD    ?= build/rel
BIN      ?= bin
OPT      ?= -O2
SAN      ?=
# one library, so the union of what its modules use: BLAS (model), jansson (formats),
# LAPACKE (spectral, quant), HDF5 (statistics files), zstd + xxHash (packed format),
# PCRE2 + utf8proc (tokenizer)
PKGS     := openblas jansson lapacke hdf5 libzstd libxxhash libpcre2-8 libutf8proc
# Open MPI when pkg-config finds it (scripts/deps.sh installs it): `mpirun -np N moeq ...`
# splits the work over ranks (docs/scale.md); MPI=0 builds without it
MPI      ?= $(shell pkg-config --exists ompi-c 2>/dev/null && echo 1 || echo 0)
ifeq ($(MPI),1)
PKGS     += ompi-c
MPI_DEF  := -DMOEQ_MPI
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS   := -std=c11 $(OPT) -g -Wall -Wextra -Werror -Wshadow -Wvla -fopenmp \
            -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(MPI_DEF) -Iinclude -I. $(PKG_CFLAGS) $(SAN)
LDLIBS   := $(PKG_LIBS) -lm -fopenmp $(SAN)

LIB_DIRS := core formats formats/gguf_arch model kernels kernels/ref kernels/x86 kernels/ggml quant prune spectral
LIB_SRC  := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOL_SRC := $(wildcard tools/*.c)
TOOL_OBJ := $(TOOL_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/unit/test_*.c)
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
LIB      := $(BUILD)/libmoeq.a
MOEQ     := $(BIN)/moeq

.PHONY: all build lib tests test test-rel test-asan demo fuzz fuzz-replay bench bench-memory bench-export bench-scale bench-mpi results results-gguf results-ik clean deps deps-test
# Dependencies are checked (and installed when root) before a second make reads the compiler
# flags from pkg-config: on a fresh machine they do not exist when this Makefile is parsed.
all: deps
	@$(MAKE) --no-print-directory build
build: $(MOEQ)
lib: $(LIB)

deps:
	@scripts/deps.sh build
deps-test:
	@scripts/deps.sh test
	@scripts/node_deps.sh build/node || echo "moeq: the llama.cpp tests (tests/cli/test_gguf_llama.sh) will fail: see above" >&2

$(BUILD)/%.o: %.c $(wildcard include/*.h) $(wildcard */*.h) $(wildcard kernels/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# per-file ISA flags: only the x86 kernel files get AVX2 / AVX-512 code; dispatch.c picks
# one at run time by cpuid (MOEQ_KERNEL=ref|avx2|avx512|vnni forces it)
$(BUILD)/kernels/x86/%avx2.o $(BUILD)/kernels/ggml/%avx2.o: CFLAGS += -mavx2 -mfma -mf16c
$(BUILD)/kernels/x86/%avx512.o $(BUILD)/kernels/ggml/%avx512.o: CFLAGS += -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq
$(BUILD)/kernels/x86/wmat_avx512.o: CFLAGS += -mavx512bf16
$(BUILD)/kernels/x86/wmat_amx.o $(BUILD)/kernels/x86/syrk_amx.o: CFLAGS += -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq \
  -mavx512bf16 -mamx-tile -mamx-bf16
$(BUILD)/kernels/x86/%vnni.o: CFLAGS += -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq \
  -mavx512vnni -mavx512vbmi -mavx512bitalg -mgfni

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(MOEQ): $(TOOL_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(TOOL_OBJ) $(LIB) $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/bench/%: bench/%.c $(wildcard bench/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) $(LDLIBS) -o $@

tests: $(MOEQ) $(TEST_BIN) $(BUILD)/tests/fuzz_replay_all

# Each fuzz target also links into a plain replay driver so `make test` runs the corpus.
$(BUILD)/tests/fuzz_replay_all: $(FUZZ_SRC) tests/fuzz/replay_main.c $(LIB)
	@mkdir -p $(dir $@)
	@set -e; for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  $(CC) $(CFLAGS) -DFUZZ_NAME=$$n $$f tests/fuzz/replay_main.c $(LIB) $(LDLIBS) -o $(BUILD)/tests/replay_$$n; done
	@touch $@

# Both builds compile with every core; `make test` then runs the two test runs side by side (each
# test is mostly one thread, process start-up and python checks, so two runs fill two cores).
NPROC ?= $(shell nproc 2>/dev/null || echo 2)
ASAN_MAKE = tests BUILD=build/asan BIN=build/asan/bin OPT=-O1 \
  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
ASAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 MOEQ_TEST_QUICK=1
test-rel: deps-test
	@$(MAKE) --no-print-directory -j$(NPROC) tests BUILD=build/rel BIN=bin
	@tests/run_tests.sh build/rel bin/moeq > build/rel/test-results.txt; tail -n 1 build/rel/test-results.txt

test-asan: deps-test
	@$(MAKE) --no-print-directory -j$(NPROC) $(ASAN_MAKE)
	@$(ASAN_ENV) tests/run_tests.sh build/asan build/asan/bin/moeq > build/asan/test-results.txt; tail -n 1 build/asan/test-results.txt

test: deps-test
	@$(MAKE) --no-print-directory -j$(NPROC) tests BUILD=build/rel BIN=bin; b1=$$?; \
	 $(MAKE) --no-print-directory -j$(NPROC) $(ASAN_MAKE); b2=$$?; \
	 tests/run_tests.sh build/rel bin/moeq > build/rel/test-results.txt & p1=$$!; \
	 $(ASAN_ENV) tests/run_tests.sh build/asan build/asan/bin/moeq > build/asan/test-results.txt & p2=$$!; \
	 wait $$p1; r1=$$?; wait $$p2; r2=$$?; \
	 echo "release: $$(tail -n 1 build/rel/test-results.txt)"; echo "asan+ubsan: $$(tail -n 1 build/asan/test-results.txt)"; \
	 cat build/rel/test-results.txt build/asan/test-results.txt 2>/dev/null | grep -E '^(FAIL|PASS) ' > build/test-all.txt || true; \
	 grep '^FAIL' build/test-all.txt || true; \
	 p=$$(grep -c '^PASS' build/test-all.txt); f=$$(grep -c '^FAIL' build/test-all.txt); \
	 [ $$b1 -eq 0 ] && [ $$b2 -eq 0 ] && [ $$r1 -eq 0 ] && [ $$r2 -eq 0 ] || f=$$((f+1)); \
	 echo "$$p passed, $$f failed"; [ $$f -eq 0 ]

demo: all
	@scripts/demo.sh

FUZZ_SECONDS ?= 30
fuzz:
	@scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory lib BUILD=build/fuzz CC=clang \
	  SAN="-fsanitize=fuzzer-no-link,address,undefined"
	@set -e; for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang $(CFLAGS) -fsanitize=fuzzer,address,undefined $$f build/fuzz/libmoeq.a $(LDLIBS) -o build/fuzz/$$n; \
	  mkdir -p tests/fuzz/corpus-run/$$n; \
	  echo "fuzzing $$n for $(FUZZ_SECONDS) s"; \
	  build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -max_len=65536 tests/fuzz/corpus-run/$$n tests/fuzz/corpus/$$n; \
	done

bench: all
	@scripts/bench.sh

# peak RSS and time of every command on a 28.6 GB Qwen1.5-MoE-shaped checkpoint, generated
# when absent (docs/bench.md, "Memory"; not part of make bench: ~30 min, 80 GB of disk)
BENCH_MODEL ?= /work/big/q15
bench-memory: all
	@$(MAKE) --no-print-directory $(BUILD)/bench/make_shaped
	@bench/bench_memory.sh $(BENCH_MODEL)

# issue 12's export benchmark: export gguf --method gptq (Q4_K, --scope all) of the Qwen1.5-MoE
# shapes, 4- and 1-layer copies measured, 24 layers extrapolated (docs/bench.md; ~17 min, 27 GB of disk)
bench-export: all
	@$(MAKE) --no-print-directory $(BUILD)/bench/make_shaped
	@bench/bench_export.sh $(or $(BENCH_EXPORT_MODEL),/work/big/q15-l4)

# issue 14's scale benchmark: a DeepSeek-V2-Lite-shaped checkpoint (MLA, 64 + 2 experts, 27
# layers, 31.4 GB bf16) and its FP8 copy (16.6 GB), generated when absent: inspect, FARMS spectra
# and RTN-4 packing, peak RSS and time of each (docs/bench.md, "Scale"; ~1 h, 60 GB of disk)
BENCH_DS ?= /work/big/dsv2
bench-scale: all
	@$(MAKE) --no-print-directory $(BUILD)/bench/make_shaped
	@BENCH_GEN_ARGS="--shape dsv2lite" BENCH_ONLY="inspect|verify|spectral-farms|quantize-rtn-q4|eval-q4-512" \
	  bench/bench_memory.sh $(BENCH_DS)
	@BENCH_GEN_ARGS="--shape dsv2lite --fp8" BENCH_ONLY="inspect|verify|spectral-farms|quantize-rtn-q4|eval-q4-512" \
	  bench/bench_memory.sh $(BENCH_DS)-fp8

# 2 MPI ranks x 1 thread against one process x 2 threads, outputs compared with cmp, ratios
# printed (docs/scale.md): spectral farms, calibrate, GPTQ. BENCH_MPI_MODEL=DIR (default: the
# synthetic checkpoint), BENCH_REPS=N runs of each, BENCH_MPI_ARGS for the GPTQ bench
bench-mpi: all
	@bench/bench_mpi.sh "$(BENCH_MPI_MODEL)" $(or $(BENCH_REPS),2)
	@bench/bench_mpi_calibrate.sh "$(BENCH_MPI_MODEL)"
	@bench/bench_mpi_quantize.sh $(BENCH_MPI_ARGS)

# the headline accuracy table: docs/RESULTS.md and docs/results.svg (a few minutes)
results: all
	@scripts/results.sh
	@scripts/results_prune.sh

# moeq's GGUF against llama-quantize --imatrix on /work/big/q3-512: docs/RESULTS-gguf.md (needs a
# llama.cpp built outside the repo: LLAMA=.../build/bin)
results-gguf: all
	@scripts/results_gguf.sh

# the same against ik_llama.cpp at its 2-bit types (IQ2_K 2.375, IQ2_KS 2.19 bits per weight),
# moeq's plan choosing among the IQ2 and K types (the TQ types do not load in ik_llama.cpp):
# docs/RESULTS-ik.md (IK=.../build/bin)
IK ?= /work/peers/ik/build/bin
results-ik: all
	@LLAMA=$(IK) TYPES="IQ2_K IQ2_KS" SCOPES=experts OUT=build/results-ik DOC=docs/RESULTS-ik.md \
	  CAND=IQ2_KS,IQ2_K,Q2_K,Q3_K,Q4_K scripts/results_gguf.sh

clean:
	rm -rf build bin
