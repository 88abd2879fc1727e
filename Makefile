# edgeseek — portable build (no -march=native; per-ISA flags go on per-ISA files)
CC      ?= cc
BUILD   ?= build
CFLAGS  ?= -O2 -g
# flags the build needs whatever CFLAGS the user passes
ES_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra -MMD -MP
LDLIBS  += -lm -lpthread
# libnuma (Debian: libnuma-dev) gives the NUMA topology when a program using
# it links (a header alone is not enough: cross compilers see /usr/include);
# `make NUMA=0` builds without it (sysfs and raw system calls instead).
NUMA ?= $(shell printf '\043include <numa.h>\nint main(void) { return numa_available(); }\n' | \
          $(CC) -x c - -o /dev/null -lnuma >/dev/null 2>&1 && echo 1 || echo 0)
ifeq ($(NUMA),1)
ES_CFLAGS += -DES_HAVE_LIBNUMA
LDLIBS  += -lnuma
endif

# Rooms, and what each may include (its own headers first).  Dependencies run
# one way: cli -> include (the public header alone); runtime (the engine) ->
# {format, text, mmap, platform, simd}; format -> {simd, platform}; text ->
# format.  tests/ are white-box and see every room.
INC_include  :=
INC_platform := -Iplatform
INC_simd     := -Isimd
INC_format   := -Iformat -Iinclude -Isimd -Iplatform
INC_text     := -Itext -Iinclude -Iformat
INC_mmap     := -Immap -Iinclude -Iruntime -Iformat -Itext
INC_runtime  := -Iruntime -Iinclude -Iformat -Itext -Immap -Iplatform -Isimd
INC_cli      := -Icli -Iinclude
INC_bench    := -Iinclude -Isimd -Iruntime -Iformat -Itext
INC_tools    := -Iinclude -Iformat -Isimd -Iplatform -Itext
INC_tests    := -Itests -Iinclude -Iruntime -Iformat -Itext -Immap -Iplatform -Isimd -Icli
INC_examples := -Iinclude

# Per-ISA flags go on the per-ISA files only; dispatch.c checks the CPU at
# run time before calling into them.
TARGET_ARCH_NAME := $(shell $(CC) -dumpmachine)
ifneq (,$(findstring x86_64,$(TARGET_ARCH_NAME)))
$(BUILD)/obj/simd/x86_avx2.o: ISA_FLAGS = -mavx2 -mfma -mf16c
$(BUILD)/obj/simd/x86_avx512.o: ISA_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mfma -mf16c
endif

LIB_DIRS := runtime format text mmap platform simd
LIB_SRC  := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TOOL_SRC := $(wildcard tools/*.c)
TOOLS    := $(TOOL_SRC:tools/%.c=$(BUILD)/%)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_COMMON_SRC := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
TEST_COMMON_OBJ := $(TEST_COMMON_SRC:%.c=$(BUILD)/obj/%.o)
# the CLI's modules that tests link too (cli/arith.c: the arithmetic evaluation)
TEST_COMMON_OBJ += $(BUILD)/obj/cli/arith.o
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCHES  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all test run asan-test clean tools bench model
.SECONDARY:
all: $(BUILD)/edgeseek $(BUILD)/libedgeseek.a $(TOOLS)

# the room is the first folder of the source's path
room = $(firstword $(subst /, ,$(patsubst $(BUILD)/obj/%,%,$(1))))
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ES_CFLAGS) $(INC_$(call room,$@)) $(CFLAGS) $(ISA_FLAGS) -c $< -o $@

$(BUILD)/libedgeseek.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/edgeseek: $(CLI_OBJ) $(BUILD)/libedgeseek.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libedgeseek.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/%: $(BUILD)/obj/tools/%.o $(BUILD)/libedgeseek.a
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libedgeseek.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_COMMON_OBJ) $(BUILD)/libedgeseek.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(TEST_COMMON_OBJ) $(BUILD)/libedgeseek.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libedgeseek.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libedgeseek.a $(LDFLAGS) $(LDLIBS)

# `make OPENBLAS=1 bench` also builds bench_gemm_openblas: bench_gemm with
# dequantised tiles + OpenBLAS's cblas_sgemm beside our matmul (Debian:
# libopenblas-dev).  Only that bench links OpenBLAS; the library never does.
ifeq ($(OPENBLAS),1)
BENCHES += $(BUILD)/bench/bench_gemm_openblas
$(BUILD)/obj/bench/bench_gemm_openblas.o: bench/bench_gemm.c
	@mkdir -p $(dir $@)
	$(CC) $(ES_CFLAGS) $(INC_bench) $(CFLAGS) -DES_OPENBLAS -c $< -o $@
$(BUILD)/bench/bench_gemm_openblas: LDLIBS += -lopenblas
endif

tools: $(TOOLS)
bench: $(BENCHES)

# Runs every test binary and the command-line test scripts (tests/test_*.sh);
# the last line is "N passed, N failed, N skipped".
# The tests read their data from tests/data (ES_DATA overrides it).
SHELL_TESTS := $(wildcard tests/test_*.sh)
test: all $(TESTS)
	@ES_BUILD=$(BUILD) sh tests/run_tests.sh $(TESTS) $(SHELL_TESTS)

# The parser, tokenizer and model tests again under AddressSanitizer/UBSan.
asan-test:
	$(MAKE) BUILD=build-asan \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" test

# `make test-arm`: the aarch64 cross-build (Debian's gcc-aarch64-linux-gnu
# and libc6-dev-arm64-cross) in build-arm/, and the whole suite under
# qemu-user on CPU models with and without dotprod/i8mm (tests/run_arm.sh).
ARM_CC    ?= aarch64-linux-gnu-gcc
ARM_BUILD ?= build-arm
ARM_TESTS  = $(TEST_SRC:tests/%.c=$(ARM_BUILD)/tests/%)
.PHONY: test-arm clean-arm
test-arm:
	$(MAKE) CC=$(ARM_CC) BUILD=$(ARM_BUILD) all $(ARM_TESTS)
	@sh tests/run_arm.sh $(ARM_BUILD) $(ARM_TESTS)
clean: clean-arm
clean-arm:
	rm -rf $(ARM_BUILD)

# `make run`: the main job on the default model.
run: all
	@sh tools/run_default.sh $(BUILD)

# `make model`: retrain the default model from scratch on the CPU (needs
# Debian's python3-torch; not run by CI).  Writes build/train/; INSTALL=1
# replaces models/edgeseek-default.gguf.  See train/README.md.
model:
	bash train/run_all.sh

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
