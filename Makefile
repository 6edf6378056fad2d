# C build: the static guest init and the host-side helpers (VMM exec, network
# stack, workspace janitor).
# Warnings are errors; `make test-c` runs the guest init's unit tests.
CC ?= gcc
CFLAGS ?= -std=gnu11 -O2 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE
LDFLAGS_STATIC = -static
B = build

INIT_SRCS = $(wildcard guest/init/*.c)
INIT_LIB_SRCS = $(filter-out guest/init/main.c guest/init/test_%.c,$(INIT_SRCS))
INIT_HDRS = $(wildcard guest/init/*.h)

all: $(B)/microagent-init $(B)/vmm-exec $(B)/netstack $(B)/janitor

$(B):
	mkdir -p $(B)

$(B)/microagent-init: $(filter-out guest/init/test_%.c,$(INIT_SRCS)) $(INIT_HDRS) | $(B)
	$(CC) $(CFLAGS) $(LDFLAGS_STATIC) -o $@ $(filter-out guest/init/test_%.c,$(INIT_SRCS))
	strip $@

$(B)/vmm-exec: native/vmm-exec.c | $(B)
	$(CC) $(CFLAGS) $(LDFLAGS_STATIC) -o $@ $<
	strip $@

$(B)/janitor: native/janitor.c | $(B)
	$(CC) $(CFLAGS) $(LDFLAGS_STATIC) -o $@ $<
	strip $@

# Linked against the distribution's libslirp (libslirp-dev to build; QEMU's
# own libslirp0 at run time).
$(B)/netstack: native/netstack.c native/net-filter.c native/net-filter.h | $(B)
	$(CC) $(CFLAGS) -o $@ native/netstack.c native/net-filter.c -lslirp
	strip $@

$(B)/test-net-filter: native/test_net_filter.c native/net-filter.c native/net-filter.h | $(B)
	$(CC) $(CFLAGS) -o $@ native/test_net_filter.c native/net-filter.c

$(B)/test-init: $(INIT_LIB_SRCS) $(wildcard guest/init/test_*.c) $(INIT_HDRS) | $(B)
	$(CC) $(CFLAGS) -o $@ $(INIT_LIB_SRCS) $(wildcard guest/init/test_*.c)

test-c: $(B)/test-init $(B)/test-net-filter
	$(B)/test-init test/fixtures/protocol
	$(B)/test-net-filter

clean:
	rm -rf $(B)

.PHONY: all clean test-c
