# qeval: one Makefile.  Targets: all test asan bench bench-peer demo fuzz clean.
#
# Libraries come through pkg-config (sqlite3, libcjson, libpcre2-8) plus
# OpenMP.  -Werror is on when CI=true (set by CI runners) or WERROR=1.
# SIMD kernels are compiled with per-function target attributes and chosen
# at run time, so the default build runs on any x86-64.

CC      ?= cc
PKGS    := sqlite3 libcjson libpcre2-8
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lsqlite3 -lcjson -lpcre2-8)

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
ifeq ($(CI),true)
WERROR  ?= 1
endif
ifeq ($(WERROR),1)
WARN    += -Werror
endif

OPT     ?= -O2
CFLAGS  ?=
CFLAGS  += -std=c11 $(OPT) -g -ffp-contract=off $(WARN) -fopenmp -D_GNU_SOURCE -MMD -MP $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -fopenmp -lm -lpthread
# The git revision is stored with every result (provenance); "-dirty" when
# the tree has uncommitted changes.  A stamp file rebuilds store.o when it changes.
GIT_REV := $(shell git describe --always --dirty=-dirty --abbrev=12 --match none 2>/dev/null || echo unknown)
CFLAGS  += -DQE_GIT_REV=\"$(GIT_REV)\"

BUILD   ?= build
LIB_SRC := $(sort $(wildcard harness/*/*.c quant/*.c reports/*.c))
LIB_SRC := $(filter-out harness/cli/main.c,$(LIB_SRC))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB     := $(BUILD)/libqeval.a

TEST_SRC  := $(sort $(wildcard tests/test_*.c))
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(sort $(wildcard tests/bench_*.c))
BENCH_BIN := $(BENCH_SRC:tests/%.c=$(BUILD)/bench/%)

QEVAL_ASSETS ?= ../shared
export QEVAL_ASSETS

.PHONY: all test asan bench bench-peer demo fuzz clean assets tests-build deps

all: qeval

qeval: $(BUILD)/obj/harness/cli/main.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# On a fresh machine the libraries are installed first (scripts/install-deps.sh,
# needs root or sudo) when pkg-config cannot find them.
deps:
	@pkg-config --exists $(PKGS) 2>/dev/null || scripts/install-deps.sh

$(BUILD)/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/bench/%: tests/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

GIT_REV_STAMP := $(BUILD)/git-rev
$(shell mkdir -p $(BUILD) && (echo '$(GIT_REV)' | cmp -s - $(GIT_REV_STAMP) || echo '$(GIT_REV)' > $(GIT_REV_STAMP)))
$(BUILD)/obj/harness/store/store.o: $(GIT_REV_STAMP)

tests-build: qeval $(TEST_BIN)

# Fetch (or link from $QEVAL_ASSETS) the models and data sets, verified by sha256.
assets:
	@scripts/fetch-assets.sh

test: tests-build assets
	@QEVAL_BIN=$(CURDIR)/qeval tests/run.sh $(TEST_BIN)

# The same tests under AddressSanitizer + UndefinedBehaviorSanitizer.
asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" qeval-asan tests-asan

.PHONY: qeval-asan tests-asan
qeval-asan: $(BUILD)/obj/harness/cli/main.o $(LIB)
	$(CC) $(CFLAGS) -o $(BUILD)/qeval $^ $(LDLIBS)

tests-asan: qeval-asan $(TEST_BIN) assets
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		QEVAL_BIN=$(CURDIR)/$(BUILD)/qeval QEVAL_ASAN=1 tests/run.sh $(TEST_BIN)

bench: qeval $(BENCH_BIN) assets
	@QEVAL_BIN=$(CURDIR)/qeval scripts/bench.sh $(BENCH_BIN)
	@if [ -n "$(LLAMACPP_DIR)" ]; then \
	    QEVAL_BIN=$(CURDIR)/qeval scripts/bench-peer.sh $(BENCH_PEER_ARGS); \
	else \
	    echo "bench: set LLAMACPP_DIR=<llama.cpp build> for decode speed side by side with llama-bench (make bench-peer)"; \
	fi

# decode speed side by side with llama.cpp on the same files (LLAMACPP_DIR:
# a llama.cpp build; BENCH_PEER_ARGS: e.g. --models qwen --reps 3)
bench-peer: qeval $(BUILD)/bench/bench_memory assets
	@QEVAL_BIN=$(CURDIR)/qeval scripts/bench-peer.sh $(BENCH_PEER_ARGS)

# End to end on the default model and data (see README).
demo: qeval assets
	@scripts/demo.sh

# libFuzzer targets for the GGUF and safetensors parsers (needs clang).
FUZZ_SRC := $(sort $(wildcard tests/fuzz_*.c))
FUZZ_BIN := $(FUZZ_SRC:tests/%.c=build-fuzz/%)
fuzz: $(FUZZ_BIN)
	@scripts/fuzz.sh $(FUZZ_BIN)

build-fuzz/%: tests/%.c $(LIB_SRC)
	@mkdir -p build-fuzz
	clang -std=c11 -O1 -g -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined $(PKG_CFLAGS) \
		-o $@ $< $(filter-out harness/cli/%,$(LIB_SRC)) $(PKG_LIBS) -fopenmp -lm

clean:
	rm -rf build build-asan build-fuzz qeval

-include $(LIB_OBJ:.o=.d) $(BUILD)/obj/harness/cli/main.d
