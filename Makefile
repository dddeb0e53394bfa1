# Driven by build.sh (which checks the dependencies first); `make` alone works once they exist.
CUDA_HOME ?= /usr/local/cuda
CC ?= cc

# Message buffers are bounded on purpose; a long path in an error line may be cut short.
WARN    := -Wall -Wextra -Werror -Wno-unused-function -Wno-missing-field-initializers \
           -Wno-format-truncation
CFLAGS  := -std=gnu11 -O2 -g $(WARN) -D_GNU_SOURCE -I. -Ibuild -isystem $(CUDA_HOME)/include
# libyaml, jansson and sqlite3 are linked statically; the C library family stays dynamic
# (dlopen of the CUDA libraries needs it).
LDLIBS  := -Wl,-Bstatic -lyaml -ljansson -lsqlite3 -lz -Wl,-Bdynamic -lm -ldl -lpthread
TESTLIB := -lcmocka

ifeq ($(V),)
Q := @
endif

EMBED_SRC := $(sort $(wildcard kernels/*.cu.in)) $(sort $(wildcard configs/models/*.json)) \
             $(sort $(wildcard src/assets/*))
TESTS     := $(patsubst test/%.c,build/%,$(sort $(wildcard test/test_*.c)))

# AddressSanitizer and UBSan builds of lwb and of the CPU tests (./build.sh test runs them too).
SAN       := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
SANTESTS  := $(patsubst test/%.c,build/asan/%,$(sort $(wildcard test/test_*.c)))

.PHONY: all tests gpu asan
all: lwb
tests: $(TESTS)
asan: build/asan/lwb $(SANTESTS)

build/asan/lwb: lwb.c build/embedded.h | build
	@echo "cc      $@ (sanitizers)"
	$(Q)mkdir -p build/asan
	$(Q)$(CC) $(CFLAGS) -O1 $(SAN) -MMD -MP -MF $@.d -o $@ lwb.c $(LDLIBS)

build/asan/test_%: test/test_%.c lwb.c build/embedded.h | build
	@echo "cc      $@ (sanitizers)"
	$(Q)mkdir -p build/asan
	$(Q)$(CC) $(CFLAGS) -O1 $(SAN) -MMD -MP -MF $@.d -o $@ $< $(LDLIBS) $(TESTLIB)

build/embed: gen/embed.c | build
	$(Q)$(CC) -O2 -Wall -Wextra -Werror -o $@ $<

build/embedded.h: build/embed $(EMBED_SRC)
	$(Q)build/embed $@ $(EMBED_SRC)

lwb: lwb.c build/embedded.h
	@echo "cc      lwb"
	$(Q)$(CC) $(CFLAGS) -MMD -MP -MF build/lwb.d -o $@ lwb.c $(LDLIBS)

# Each test includes lwb.c with LWB_NO_MAIN, so it sees every module as one unit.
build/test_%: test/test_%.c lwb.c build/embedded.h
	@echo "cc      $@"
	$(Q)$(CC) $(CFLAGS) -O1 -MMD -MP -MF $@.d -o $@ $< $(LDLIBS) $(TESTLIB)

# GPU checks: built here, run on the GPU machine (test/gpu/run.sh).
gpu: build/gpu_check build/profile_probe build/e2e_probe
build/gpu_check: test/gpu/check.c lwb.c build/embedded.h $(wildcard test/ref/*.c test/ref/*.h)
	@echo "cc      $@"
	$(Q)$(CC) $(CFLAGS) -MMD -MP -MF $@.d -o $@ $< $(LDLIBS)

build/profile_probe: test/gpu/profile_probe.c lwb.c build/embedded.h
	@echo "cc      $@"
	$(Q)$(CC) $(CFLAGS) -MMD -MP -MF $@.d -o $@ $< $(LDLIBS)

# lwb parse --e2e's real fixtures: a serving loop's NVTX markers (test/gpu/e2e_run.sh).
build/e2e_probe: test/gpu/e2e_probe.c lwb.c build/embedded.h
	@echo "cc      $@"
	$(Q)$(CC) $(CFLAGS) -MMD -MP -MF $@.d -o $@ $< $(LDLIBS)

build:
	$(Q)mkdir -p build

-include build/lwb.d $(wildcard build/test_*.d build/gpu_*.d build/profile_*.d build/e2e_*.d build/asan/*.d)
