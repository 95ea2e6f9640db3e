//go:build rewind_embed

package initramfs

import _ "embed"

// The archive is written by 'make initramfs'; 'make build' compiles
// cmd/rewind with -tags rewind_embed to carry it.
//
//go:embed rewind-base.cpio.gz
var embedded []byte

func init() { embeddedBase = embedded }
