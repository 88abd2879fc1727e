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

# libcjson (Debian: libcjson-dev) parses the JSON of Hugging Face checkpoints
# for `edgeseek convert`.  Only the CLI links it (the convert/ room), never
# the library; `make CJSON=0` (or a toolchain without it, as the aarch64
# cross-build) builds a CLI whose convert says it is unavailable.
CJSON ?= $(shell printf '\043include <cjson/cJSON.h>\nint main(void) { cJSON_Delete(0); return 0; }\n' | \
          $(CC) -x c - -o /dev/null -lcjson >/dev/null 2>&1 && echo 1 || echo 0)

# libedit (Debian: libedit-dev, BSD licence) gives `edgeseek chat` line
# editing and history.  Only the CLI links it; `make EDIT=0` (or a toolchain
# without it) builds a chat that reads plain lines.
EDIT ?= $(shell printf '\043include <histedit.h>\nint main(void) { el_end(el_init("x", 0, 0, 0)); return 0; }\n' | \
          $(CC) -x c - -o /dev/null -ledit >/dev/null 2>&1 && echo 1 || echo 0)

# civetweb (Debian: libcivetweb-dev) serves HTTP for `edgeseek serve`, whose
# JSON is cJSON's: the server/ room needs both and only the CLI links them.
# Without either (or with `make SERVER=0`) the CLI's serve says what the build
# lacks.
CIVETWEB ?= $(shell printf '\043include <civetweb.h>\nint main(void) { return !mg_init_library(0); }\n' | \
          $(CC) -x c - -o /dev/null -lcivetweb >/dev/null 2>&1 && echo 1 || echo 0)
SERVER ?= $(if $(filter 11,$(CJSON)$(CIVETWEB)),1,0)

# Rooms, and what each may include (its own headers first).  Dependencies run
# one way: cli -> include (the public header alone); runtime (the engine) ->
# {format, text, mmap, platform, simd}; format -> {simd, platform}; text ->
# format; mmap -> include.  tests/ are white-box and see every room; bench/
# sees the public header and the kernel table (simd/kernels.h, public on
# purpose for the kernel benchmarks).
INC_include  :=
INC_platform := -Iplatform
INC_simd     := -Isimd
INC_format   := -Iformat -Iinclude -Isimd -Iplatform
INC_text     := -Itext -Iinclude -Iformat
INC_mmap     := -Immap -Iinclude
INC_runtime  := -Iruntime -Iinclude -Iformat -Itext -Immap -Iplatform -Isimd
INC_cli      := -Icli -Iinclude
# cmd_convert.c alone sees the conversion room (the CLI links it with cJSON)
$(BUILD)/obj/cli/cmd_convert.o: INC_cli += -Iconvert
INC_convert  := -Iconvert -Iinclude -Iformat -Isimd -Iplatform
# server/: the HTTP server over the public header (cmd_serve.c sees it)
INC_server   := -Iserver -Iinclude
$(BUILD)/obj/cli/cmd_serve.o: INC_cli += -Iserver
INC_bench    := -Iinclude -Isimd
# bench_attention times the MLA attention core alone: the one benchmark that
# reaches into the engine (its headers and what they include).
$(BUILD)/obj/bench/bench_attention.o: INC_bench += -Iruntime -Iformat -Itext -Immap -Iplatform
INC_tools    := -Iinclude -Iformat -Isimd -Iplatform -Itext
INC_tests    := -Itests -Iinclude -Iruntime -Iformat -Itext -Immap -Iplatform -Isimd -Icli
INC_examples := -Iinclude

# Per-ISA flags go on the per-ISA files only; dispatch.c checks the CPU at
# run time before calling into them.
TARGET_ARCH_NAME := $(shell $(CC) -dumpmachine)
ifneq (,$(findstring x86_64,$(TARGET_ARCH_NAME)))
$(BUILD)/obj/simd/x86_avx2.o $(BUILD)/pic/simd/x86_avx2.o: ISA_FLAGS = -mavx2 -mfma -mf16c
$(BUILD)/obj/simd/x86_avx2_fp8.o $(BUILD)/pic/simd/x86_avx2_fp8.o: ISA_FLAGS = -mavx2 -mfma -mf16c
$(BUILD)/obj/simd/x86_avx512_fp8.o $(BUILD)/pic/simd/x86_avx512_fp8.o: ISA_FLAGS = -mavx512f -mavx512bw -mavx512vl -mfma -mf16c
$(BUILD)/obj/simd/x86_avx512.o $(BUILD)/pic/simd/x86_avx512.o: ISA_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mfma -mf16c
$(BUILD)/obj/simd/x86_amx.o $(BUILD)/pic/simd/x86_amx.o: ISA_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c -mamx-tile -mamx-int8
endif

LIB_DIRS := runtime format text mmap platform simd
LIB_SRC  := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
# convert/: Hugging Face checkpoints to GGUF; the CLI alone links it (and cJSON)
ifeq ($(CJSON),1)
CONVERT_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard convert/*.c))
CLI_LIBS += -lcjson
$(BUILD)/obj/cli/cmd_convert.o: ES_CFLAGS += -DES_HAVE_CJSON
endif
ifeq ($(EDIT),1)
CLI_LIBS += -ledit
$(BUILD)/obj/cli/cmd_chat.o: ES_CFLAGS += -DES_HAVE_LIBEDIT
endif
# server/: `edgeseek serve`; the CLI alone links it (civetweb and cJSON), with
# the page of server/page.html turned into a C array by the rule below
ifeq ($(SERVER),1)
SERVER_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard server/*.c)) $(BUILD)/obj/gen/page.o
CLI_LIBS += -lcivetweb
$(BUILD)/obj/cli/cmd_serve.o: ES_CFLAGS += -DES_HAVE_SERVER
endif
TOOL_SRC := $(wildcard tools/*.c)
TOOLS    := $(TOOL_SRC:tools/%.c=$(BUILD)/%)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_COMMON_SRC := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
TEST_COMMON_OBJ := $(TEST_COMMON_SRC:%.c=$(BUILD)/obj/%.o)
# the CLI's modules that tests link too (cli/arith.c: the arithmetic evaluation)
TEST_COMMON_OBJ += $(BUILD)/obj/cli/arith.o
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# test_chat drives `edgeseek chat` through a pseudo-terminal (forkpty)
$(BUILD)/tests/test_chat: LDLIBS += -lutil
BENCH_SRC := $(wildcard bench/*.c)
BENCHES  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
EXAMPLE_SRC := $(wildcard examples/*.c)
EXAMPLES := $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)
# tests that are scripts: each prints "N passed, N failed" last, like the binaries
SCRIPT_TESTS := tests/example_test.sh tests/install_test.sh

.PHONY: all test run asan-test clean tools bench model mtp-model shared install uninstall
.SECONDARY:
all: $(BUILD)/edgeseek $(BUILD)/libedgeseek.a $(TOOLS) $(EXAMPLES)

# the room is the first folder of the source's path
room = $(firstword $(subst /, ,$(patsubst $(BUILD)/pic/%,%,$(patsubst $(BUILD)/obj/%,%,$(1)))))
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ES_CFLAGS) $(INC_$(call room,$@)) $(CFLAGS) $(ISA_FLAGS) -c $< -o $@

# The shared library is built from its own position-independent objects, so
# the static library, the CLI and the tests keep the code they have today.
$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ES_CFLAGS) $(INC_$(call room,$@)) $(CFLAGS) $(ISA_FLAGS) -fPIC -fno-semantic-interposition -c $< -o $@

$(BUILD)/libedgeseek.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/edgeseek: $(CLI_OBJ) $(CONVERT_OBJ) $(SERVER_OBJ) $(BUILD)/libedgeseek.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(CONVERT_OBJ) $(SERVER_OBJ) $(BUILD)/libedgeseek.a $(LDFLAGS) $(CLI_LIBS) $(LDLIBS)

# The page the server sends at /, as bytes in the binary (od, no tool of ours)
$(BUILD)/gen/page.c: server/page.html
	@mkdir -p $(dir $@)
	{ echo '/* generated from server/page.html by the Makefile */'; echo '#include <stddef.h>'; \
	  echo 'const unsigned char srv_page_html[] = {'; \
	  od -An -v -tu1 server/page.html | sed 's/\([0-9][0-9]*\)/\1,/g'; \
	  echo '0};'; echo 'const size_t srv_page_html_len = sizeof srv_page_html - 1;'; } > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/gen/page.o: $(BUILD)/gen/page.c
	@mkdir -p $(dir $@)
	$(CC) $(ES_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/%: $(BUILD)/obj/tools/%.o $(BUILD)/libedgeseek.a
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libedgeseek.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_COMMON_OBJ) $(BUILD)/libedgeseek.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(TEST_COMMON_OBJ) $(BUILD)/libedgeseek.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libedgeseek.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libedgeseek.a $(LDFLAGS) $(LDLIBS)

# examples/ are built as a user would: edgeseek.h and the library, nothing else
$(BUILD)/examples/%: $(BUILD)/obj/examples/%.o $(BUILD)/libedgeseek.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libedgeseek.a $(LDFLAGS) $(LDLIBS)

# ---- shared library -------------------------------------------------------
# libedgeseek.so.$(VERSION), its soname libedgeseek.so.$(SOVERSION) and the
# libedgeseek.so link for -ledgeseek.  It exports exactly the functions that
# include/edgeseek.h declares: the version script lists them (read from the
# preprocessed header, so comments do not count) and makes the rest local.
VERSION   := 0.1.0
SOVERSION := $(firstword $(subst ., ,$(VERSION)))
SONAME    := libedgeseek.so.$(SOVERSION)
SHLIB     := libedgeseek.so.$(VERSION)
LIB_PIC_OBJ := $(LIB_SRC:%.c=$(BUILD)/pic/%.o)

shared: $(BUILD)/$(SHLIB)

$(BUILD)/edgeseek.map: include/edgeseek.h
	@mkdir -p $(dir $@)
	{ echo '/* generated from include/edgeseek.h by the Makefile */'; echo '{'; echo '  global:'; \
	  $(CC) -E -P -x c include/edgeseek.h | grep -oE '\<es_[A-Za-z0-9_]+ *\(' | sed 's/ *($$//' | \
	    LC_ALL=C sort -u | sed 's/^/    /; s/$$/;/'; \
	  echo '  local: *;'; echo '};'; } > $@.tmp && mv $@.tmp $@

$(BUILD)/$(SHLIB): $(LIB_PIC_OBJ) $(BUILD)/edgeseek.map
	$(CC) $(CFLAGS) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=$(BUILD)/edgeseek.map \
	  -Wl,--no-undefined -o $@ $(LIB_PIC_OBJ) $(LDFLAGS) $(LDLIBS)
	ln -sf $(SHLIB) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libedgeseek.so

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

# ---- expert parallelism over MPI (dist/) --------------------------------------
# `make MPI=1` also builds $(BUILD)/edgeseek-mpi (README "Several machines"):
# dist/ compiled and linked with MPICC (Open MPI's or MPICH's mpicc; Debian:
# libopenmpi-dev), the CLI's run, logits, bench and eval commands, and the
# library, with the model and session calls the CLI makes wrapped
# (-Wl,--wrap) so that rank 0 mirrors them to the other ranks.  Nothing else
# sees MPI: the default build never needs it.  `make test-mpi` builds it
# when mpicc is there and runs tests/mpi_test.sh (a skip without MPI).
# Another MPI beside the default one: `make MPI=1 MPICC=mpicc.mpich` builds
# $(BUILD)/edgeseek-mpi-mpich (its own objects), `make test-mpi
# MPICC=mpicc.mpich MPIRUN=mpirun.mpich` tests it.
MPICC ?= mpicc
MPIRUN ?= mpirun
MPI_TAG := $(if $(filter mpicc,$(notdir $(MPICC))),,-$(subst mpicc.,,$(notdir $(MPICC))))
MPI_BIN := $(BUILD)/edgeseek-mpi$(MPI_TAG)
INC_dist := -Idist -Iinclude -Icli
DIST_OBJ := $(patsubst dist/%.c,$(BUILD)/obj/dist$(MPI_TAG)/%.o,$(wildcard dist/*.c))
DIST_CLI_OBJ := $(addprefix $(BUILD)/obj/cli/,cmd_run.o cmd_logits.o cmd_bench.o cmd_eval.o arith.o common.o session.o)
DIST_WRAP := es_model_load es_model_free es_session_new es_session_new_ext es_session_free es_session_set_threads \
             es_session_reset es_session_truncate es_session_eval es_session_load
$(BUILD)/obj/dist$(MPI_TAG)/%.o: dist/%.c
	@mkdir -p $(dir $@)
	$(MPICC) $(ES_CFLAGS) $(INC_dist) $(CFLAGS) -c $< -o $@
$(MPI_BIN): $(DIST_OBJ) $(DIST_CLI_OBJ) $(BUILD)/libedgeseek.a
	$(MPICC) $(CFLAGS) -o $@ $(DIST_OBJ) $(DIST_CLI_OBJ) $(BUILD)/libedgeseek.a \
	  $(addprefix -Wl$(comma)--wrap=,$(DIST_WRAP)) $(LDFLAGS) $(LDLIBS)
comma := ,
ifeq ($(MPI),1)
all: $(MPI_BIN)
endif
.PHONY: test-mpi
test-mpi: all
	@if command -v $(MPICC) >/dev/null 2>&1; then $(MAKE) --no-print-directory MPI=1 $(MPI_BIN); fi
	@ES_MPI_BIN=$(MPI_BIN) ES_MPIRUN=$(MPIRUN) sh tests/mpi_test.sh $(BUILD)

# Runs every test binary, the command-line test scripts (tests/test_*.sh)
# and the script tests; the last line is "N passed, N failed, N skipped".
# The tests read their data from tests/data (ES_DATA overrides it).  The
# shared library is built here for tests/install_test.sh, which a sanitizer
# build skips.
SHELL_TESTS := $(wildcard tests/test_*.sh)
test: all $(TESTS) $(if $(findstring -fsanitize,$(CFLAGS)),,shared)
	@ES_BUILD=$(BUILD) sh tests/run_tests.sh $(TESTS) $(SHELL_TESTS) $(SCRIPT_TESTS)

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

# `make mtp-model`: train the default model's MTP (next-n) module on the CPU
# (about 30 minutes; BASE= the model to extend, INSTALL=1 writes the result
# as models/edgeseek-default-mtp.gguf).  See train/README.md, "MTP module".
mtp-model:
	bash train/run_mtp.sh

# ---- install ----------------------------------------------------------------
# `make install PREFIX=/usr/local DESTDIR=`: the CLI, both libraries, the
# header, a pkg-config file and the man page.  `make uninstall` (same
# variables) removes exactly those files.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
INSTALL    ?= install
# in edgeseek.pc, directories under the prefix are written from ${prefix}, so
# pkg-config --define-prefix can move them
pc_dir = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))

$(BUILD)/edgeseek.1: docs/edgeseek.1 Makefile
	@mkdir -p $(dir $@)
	sed 's/@VERSION@/$(VERSION)/g' docs/edgeseek.1 > $@

install: $(BUILD)/edgeseek $(BUILD)/libedgeseek.a $(BUILD)/$(SHLIB) $(BUILD)/edgeseek.1
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(call pc_dir,$(LIBDIR))|g' \
	    -e 's|@INCLUDEDIR@|$(call pc_dir,$(INCLUDEDIR))|g' -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@LIBS_PRIVATE@|$(strip $(LDLIBS))|g' edgeseek.pc.in > $(BUILD)/edgeseek.pc
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	  $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 755 $(BUILD)/edgeseek $(DESTDIR)$(BINDIR)/edgeseek
	$(INSTALL) -m 644 $(BUILD)/libedgeseek.a $(DESTDIR)$(LIBDIR)/libedgeseek.a
	$(INSTALL) -m 644 $(BUILD)/$(SHLIB) $(DESTDIR)$(LIBDIR)/$(SHLIB)
	ln -sf $(SHLIB) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libedgeseek.so
	$(INSTALL) -m 644 include/edgeseek.h $(DESTDIR)$(INCLUDEDIR)/edgeseek.h
	$(INSTALL) -m 644 $(BUILD)/edgeseek.pc $(DESTDIR)$(PKGCONFIGDIR)/edgeseek.pc
	$(INSTALL) -m 644 $(BUILD)/edgeseek.1 $(DESTDIR)$(MANDIR)/man1/edgeseek.1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/edgeseek $(DESTDIR)$(LIBDIR)/libedgeseek.a \
	  $(DESTDIR)$(LIBDIR)/$(SHLIB) $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libedgeseek.so \
	  $(DESTDIR)$(INCLUDEDIR)/edgeseek.h $(DESTDIR)$(PKGCONFIGDIR)/edgeseek.pc \
	  $(DESTDIR)$(MANDIR)/man1/edgeseek.1

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD)/obj $(BUILD)/pic -name '*.d' 2>/dev/null)
