# rimon: build, test, lint, fuzz, benchmark.
GO        ?= go
BIN       ?= rimon
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# The in-process simulator must hold a 2600-byte NV index, as Azure's HCL report is.
export CGO_CFLAGS ?= -O2 -g -DMAX_NV_INDEX_SIZE=4096
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
FUZZTIME  ?= 10s
APT_PACKAGES := swtpm swtpm-tools tpm2-tools libssl-dev openssl util-linux dbus postgresql runc podman chromium

DEB_VERSION ?= $(shell v=$$(git describe --tags --abbrev=0 2>/dev/null | sed 's/^v//'); echo $${v:-0.1.0}~git$$(git rev-parse --short HEAD 2>/dev/null || echo 0))

.PHONY: all build test lint fuzz bench deps demo deb deb-test clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/rimon

## test: every test, including the simulator, swtpm and tpm2-tools ones.
test:
	$(GO) test -count=1 ./...

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(STATICCHECK) -version 2>/dev/null | grep -q 0.8.2 || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$(STATICCHECK) ./...

## fuzz: a short run of every fuzz target.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## bench: Go benchmarks, then the comparison scripts under bench/.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	bash bench/hashing.sh
	bash bench/agent.sh
	bash bench/verify.sh

## deps: the Debian packages the tests and the demo need (run as root).
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

## demo: rimon's main job on the in-process TPM simulator, with no TPM hardware: measure, change, attest.
demo: deps build
	bash scripts/demo.sh ./$(BIN)

## deb: dist/rimon_<version>_<arch>.deb (binary, unit, example policies, man pages).
deb: build
	bash packaging/deb/build.sh ./$(BIN) $(DEB_VERSION)

## deb-test: install, check, remove and purge the package (root, scratch machine).
deb-test: deb
	bash packaging/deb/test.sh dist/rimon_$(DEB_VERSION)_$$(dpkg --print-architecture).deb

clean:
	rm -rf $(BIN) dist
