# Rewind — see README.md. Every target installs what it needs first.
GO      ?= go
BIN     := bin
export GOFLAGS := -buildvcs=false

.PHONY: all setup build test qemu-test bench demo fuzz vet clean initramfs

all: build

setup:
	@bash scripts/setup.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

# bin/rewind carries the base rescue initramfs, so media can be built on a
# machine without Go.
build: setup initramfs
	$(GO) build -tags rewind_embed -o $(BIN)/rewind ./cmd/rewind

# Unit and integration tests on files, loop devices and HTTP on loopback run
# under the race detector; then a representative set of QEMU recoveries and
# one capture at boot (two disks uploaded to 'rewind serve', restored onto a
# second machine); those test the guest, so the host side runs without
# -race. Which QEMU tests run here: those whose setup is not marked 'all' in
# qemu-tests/.
UNIT_PKGS = $$($(GO) list ./... | grep -v /qemu-tests)
test: setup vet
	$(GO) test -race -count=1 -timeout 25m $(UNIT_PKGS)
	$(GO) test -count=1 -timeout 25m ./qemu-tests/...

fuzz:
	$(GO) test ./snapshot -run '^$$' -fuzz FuzzParseManifest -fuzztime 60s
	$(GO) test ./fsmap -run '^$$' -fuzz '^FuzzRead$$' -fuzztime 60s
	$(GO) test ./fsmap -run '^$$' -fuzz '^FuzzFAT$$' -fuzztime 60s
	$(GO) test ./fsmap -run '^$$' -fuzz '^FuzzNTFS$$' -fuzztime 60s

# Benchmarks against lz4, zstd, bmaptool, partclone and cp on one corpus.
bench: setup
	$(GO) run ./bench $(BENCHFLAGS)

# The main job end to end.
demo: setup
	bash qemu-tests/demo.sh

clean:
	rm -rf $(BIN) out

# The base rescue initramfs (u-root core commands, rewind, rewind-init),
# embedded into bin/rewind by builds with -tags rewind_embed.
initramfs: setup
	GOAMD64=v1 $(GO) run ./initramfs/mkbase -o initramfs/rewind-base.cpio.gz

# Every QEMU recovery (USB, HTTP, countdown, NVMe/AHCI, damage, media build, the
# used system disk captured used-blocks, restored and booted) and capture at
# boot (a machine's two disks uploaded to 'rewind serve' and restored onto a
# second machine from .../latest; a capture onto the stick).
qemu-test: setup
	REWIND_QEMU_ALL=1 $(GO) test -count=1 -timeout 50m -v ./qemu-tests/
