# mhcodi — see README.md. Every target that needs system packages runs
# scripts/deps.sh first, so a fresh Debian 12 machine needs nothing by hand.

export PATH := /usr/local/go/bin:$(PATH)
GO          ?= go
BIN         := bin
CACHE       := .cache
STATICCHECK := $(CACHE)/bin/staticcheck
FUZZTIME    ?= 10s
# Every fuzz target, as package:Target; make fuzz runs each for FUZZTIME.
FUZZ_TARGETS := \
	./naming:FuzzParseIQN ./naming:FuzzParseDevPath ./naming:FuzzVolumeNameSplits \
	./naming:FuzzParseWWN ./naming:FuzzLegNames ./configs:FuzzParseSize

.PHONY: all deps build test unit lint fuzz demo bench clean

all: build

deps:
	bash scripts/deps.sh

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ ./cmd/...

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

# The demo runs on the loopback example (two nodes on 127.0.0.11/12).
demo: deps build
	@echo "== The cluster file: configs/examples/loopback.yaml"
	@echo "== Every disk leg and the names derived for it:"
	$(BIN)/mhcodi config check --config configs/examples/loopback.yaml

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

clean:
	rm -rf $(BIN)
