# mhcodi — see README.md. Every target that needs system packages runs
# scripts/deps.sh first, so a fresh Debian 12 machine needs nothing by hand.

# Go: the toolchain scripts/deps.sh fetched into .cache/go when this machine
# had none new enough for go.mod (see deps.sh), else /usr/local/go's, else
# the one on PATH. Directories that do not exist cost nothing on PATH.
BIN         := bin
CACHE       := .cache
export PATH := $(CURDIR)/$(CACHE)/go/bin:/usr/local/go/bin:$(PATH)
GO          ?= go
# The version every binary prints with --version (scripts/version.sh: git
# describe, or 0.0.0-<commits>-g<hash> before the first tag).
VERSION     ?= $(shell scripts/version.sh)
LDFLAGS     := -X github.com/mhcodi/mhcodi/internal/version.Version=$(VERSION)
STATICCHECK := $(CACHE)/bin/staticcheck
FUZZTIME    ?= 10s
# Every fuzz target, as package:Target; make fuzz runs each for FUZZTIME.
FUZZ_TARGETS := \
	./naming:FuzzParseIQN ./naming:FuzzParseDevPath ./naming:FuzzVolumeNameSplits \
	./naming:FuzzParseWWN ./naming:FuzzLegNames ./naming:FuzzMAC ./configs:FuzzParseSize \
	./iscsi/pdu:FuzzDecode ./iscsi/text:FuzzParseText ./targetd/login:FuzzLoginStep \
	./targetd/scsi:FuzzExecute ./targetd/iscsi:FuzzFullFeature \
	./initiator/nbd:FuzzDecodeRequest ./initiator/nbd:FuzzServeConn ./initiator/iscsiclient:FuzzLoginMachine \
	./guestraid/channel:FuzzDecode

.PHONY: all deps build image test unit lint fuzz demo bench clean deb

all: build

deps:
	bash scripts/deps.sh

# Static binaries (CGO_ENABLED=0): guestraid, mhcodi-workload and u-root's
# init go into the guest image as they are, and static daemons need no
# libc of a particular version on the hosts. GOAMD64=v1 runs on qemu's
# default CPU model.
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 GOAMD64=v1 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...
	CGO_ENABLED=0 GOAMD64=v1 $(GO) build -trimpath -o $(BIN)/uroot-init github.com/u-root/u-root/cmds/core/init

# The guest image (kernel + u-root initramfs with guestraid and mdadm) in
# $(CACHE)/guest-image; rebuilt only when an input changed.
image: deps build
	$(BIN)/mhcodi image build --out $(CACHE)/guest-image --kernel-dir $(CACHE)/kernel --bin-dir $(BIN)

lint: deps
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Everything CI runs: deps, build, lint, then every test (unit, fuzz seed
# corpora, end-to-end against the built binaries).
test: deps build lint
	$(GO) test -race -count=1 -timeout 20m ./...

# Only the Go tests, for a quick loop once deps are in place.
unit:
	$(GO) test -count=1 ./...

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# The demo: two hosts as network namespaces, targetd on each, the guest
# image booted on node-a with its disk mirrored across both, node-b's leg
# killed and returned while the guest writes (about a minute; needs root).
demo: deps build
	@echo "== The cluster file of the loopback example, and the names derived for each leg:"
	$(BIN)/mhcodi config check --config configs/examples/loopback.yaml
	@echo "== A guest mirrored across two hosts:"
	$(GO) run ./test/cmd/demo

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

# Measures tgt, gotgt and mhcodi-targetd with iscsi-perf and qemu-img bench
# over loopback on one page-cached file (about 5 minutes; see
# test/cmd/bench-target): single and parallel sessions, and per target its
# CPU-seconds per 100k I/Os, context switches per I/O and peak RSS. A failed
# build is not fatal: targetd's column is then "n/a (not built)", or the last
# binary built. Pass flags with
# BENCH_TARGET_FLAGS="-duration 5s -size 256M -rows QD1$,x8".
.PHONY: bench-target bench-guest
bench-target: deps
	-$(MAKE) --no-print-directory build
	$(GO) run ./test/cmd/bench-target $(BENCH_TARGET_FLAGS)

clean:
	rm -rf $(BIN) dist

# Debian packages: dist/mhcodi_<version>-1_amd64.deb (binaries, units, an
# example /etc/mhcodi/cluster.yaml, manual pages, completions) and
# dist/mhcodi-guest_<version>-1_amd64.deb (guestraid, its initramfs hook
# and watch unit), built with nfpm (packaging/). Needs Go, not root.
deb:
	VERSION='$(VERSION)' GO='$(GO)' bash packaging/deb.sh

# Inside a guest of the test cluster: sequential MB/s of md0 against its
# local leg alone and its remote leg alone, per request size (about a
# minute each under TCG).
bench-guest: deps build
	$(GO) run ./test/cmd/bench-guest $(BENCH_GUEST_FLAGS)

# The fencing figures: both failover end-to-end tests run N times (default
# 3; about 2.5 minutes a round), with min/median/max of each figure.
.PHONY: bench-failover
bench-failover: deps build
	$(GO) run ./test/cmd/failover-figures $(BENCH_FAILOVER_FLAGS)
