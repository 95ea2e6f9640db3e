#!/usr/bin/env bash
# Rewind's recovery end to end in QEMU ('make demo'): build, capture a
# sample disk, build rescue media and a USB stick, boot, count down,
# restore, verify from the host. See qemu-tests/demo/main.go.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./qemu-tests/demo "$@"
