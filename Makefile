# thumbgate — one non-recursive GNU Makefile.
#   make              build ./thumbgate (-O2 -g)
#   make test         build and run every test (Check unit + integration)
#   make check-asan   the whole suite under AddressSanitizer + UBSan (build/asan/)
#   make deps         apt-get install every Debian package the build and tests need
#   make run          build and start the server on the embedded default config
# Objects live in build/<variant>/ so variants never mix.

PKG_CONFIG ?= pkg-config
PKGS        = libh2o-evloop vips yaml-0.1
TEST_PKGS   = check libcurl
CC         ?= cc

VARIANT    ?= release
BUILD       = build/$(VARIANT)

WARN     = -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Werror=implicit-function-declaration \
           -Wno-unused-parameter
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -DH2O_USE_LIBUV=0 -pthread $(WARN) -MMD -MP -I.
CFLAGS  += $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -lssl -lcrypto -lz -lm -pthread
TEST_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(TEST_PKGS) 2>/dev/null)
TEST_LIBS   = $(shell $(PKG_CONFIG) --libs $(TEST_PKGS) 2>/dev/null)

ifdef SANITIZE
CFLAGS  += -fsanitize=$(SANITIZE) -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# Programs (files with a main) are listed here; every other .c in the three
# source folders is library code linked into both the server and the tests.
PROG_SRCS = server/main.c imgproc/calibrate.c imgproc/fuzz_probe.c
LIB_SRCS  = $(filter-out $(PROG_SRCS),$(wildcard server/*.c imgproc/*.c config/*.c))
LIB_OBJS  = $(LIB_SRCS:%.c=$(BUILD)/%.o)
TEST_SRCS = $(wildcard tests/check_*.c)
TEST_OBJS = $(TEST_SRCS:%.c=$(BUILD)/%.o)
SUITES    = $(filter-out main,$(patsubst tests/check_%.c,%,$(TEST_SRCS)))

BIN       = thumbgate
TEST_BIN  = $(BUILD)/tests/check_all

.PHONY: all test check-asan check deps run clean loadtest loadtest-smoke calibrate fuzz bench format
all: $(BIN)

ifeq ($(VARIANT),release)
$(BIN): $(BUILD)/server/main.o $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
endif

$(BUILD)/thumbgate: $(BUILD)/server/main.o $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%.o: tests/%.c $(BUILD)/tests/suites.def
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) -I$(BUILD)/tests -c -o $@ $<

# The runner learns its suites from the file names: tests/check_<mod>.c exports <mod>_suite().
$(BUILD)/tests/suites.def: $(TEST_SRCS) Makefile
	@mkdir -p $(@D)
	@printf 'SUITE(%s)\n' $(SUITES) > $@.tmp && mv $@.tmp $@

$(TEST_BIN): $(TEST_OBJS) $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LIBS) $(LDLIBS)

# Integration tests start the real binary named by THUMBGATE_BIN.
test: $(TEST_BIN) $(BUILD)/thumbgate
	THUMBGATE_BIN=$(abspath $(BUILD)/thumbgate) ./$(TEST_BIN)

check-asan:
	$(MAKE) VARIANT=asan SANITIZE=address,undefined CFLAGS="-O1 -g" test-sanitized
test-sanitized: $(TEST_BIN) $(BUILD)/thumbgate
	ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 \
	LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	UBSAN_OPTIONS=suppressions=$(abspath tests/ubsan.supp):print_stacktrace=1:halt_on_error=1 \
	THUMBGATE_BIN=$(abspath $(BUILD)/thumbgate) THUMBGATE_SANITIZED=1 ./$(TEST_BIN)
check: check-asan

DEB_PKGS = build-essential pkg-config libh2o-evloop-dev libvips-dev libyaml-dev libjpeg62-turbo-dev \
           libpng-dev libwebp-dev libssl-dev zlib1g-dev check libcurl4-openssl-dev libsubunit-dev
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "deps: all present"; fi

run: $(BIN)
	./$(BIN)

clean:
	rm -rf build $(BIN)

format:
	clang-format -i $(wildcard server/*.[ch] imgproc/*.[ch] config/*.[ch] tests/*.[ch] loadtest/*.[ch])

# ---- imgproc: calibration, fuzzing (imgproc branch; keep this block together) ----------
# make calibrate        full grid: estimate vs measured peak per case + summary line
# make calibrate-reduced small grid in seconds; fails on any underestimate (part of `test`)
# make fuzz             libFuzzer on imgproc_probe_buf for FUZZ_SECONDS (default 600)
# make fuzz-smoke       the same for 30 s (CI)
IMGPROC_OBJS = $(filter $(BUILD)/imgproc/%,$(LIB_OBJS))
CALIBRATE    = $(BUILD)/imgproc/calibrate
CALIBRATE_FLAGS ?= --jobs 2
$(CALIBRATE): $(BUILD)/imgproc/calibrate.o $(IMGPROC_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
calibrate: $(CALIBRATE)
	./$(CALIBRATE) $(CALIBRATE_FLAGS)
calibrate-reduced: $(CALIBRATE)
	./$(CALIBRATE) --reduced --jobs 2
test: calibrate-reduced

FUZZ_SECONDS ?= 600
FUZZ_CC      ?= clang
FUZZ_DIR      = build/fuzz
FUZZ_BIN      = $(FUZZ_DIR)/fuzz_probe
FUZZ_FLAGS    = -std=c11 -D_GNU_SOURCE -g -O1 -I. -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined -fno-omit-frame-pointer
$(FUZZ_BIN): imgproc/fuzz_probe.c imgproc/probe.c imgproc/plan.c imgproc/imgproc.h imgproc/imgproc_internal.h
	@mkdir -p $(FUZZ_DIR)/corpus
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ imgproc/fuzz_probe.c imgproc/probe.c imgproc/plan.c -lz -lm
fuzz: $(FUZZ_BIN)
	@mkdir -p $(FUZZ_DIR)/corpus $(FUZZ_DIR)/artifacts
	./$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=5 -rss_limit_mb=1024 \
	    -artifact_prefix=$(FUZZ_DIR)/artifacts/ -print_final_stats=1 $(FUZZ_DIR)/corpus tests/data/fuzz
fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=30
.PHONY: calibrate-reduced fuzz-smoke
# ---- end imgproc block -----------------------------------------------------------------

-include $(wildcard $(BUILD)/*/*.d $(BUILD)/*/*/*.d)
