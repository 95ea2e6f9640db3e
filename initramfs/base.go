package initramfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// BaseName is the file name of the base archive, gzip-compressed.
const BaseName = "rewind-base.cpio.gz"

// embeddedBase is set by base_embed.go in binaries built with the
// rewind_embed tag ('make build'); plain 'go build' leaves it empty.
var embeddedBase []byte

// Base returns the base archive and where it came from: the file given,
// else the archive built into this binary, else BaseName next to the
// executable.
func Base(file string) ([]byte, string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		return b, file, err
	}
	if len(embeddedBase) > 0 {
		return embeddedBase, "built in", nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), BaseName)
		if b, err := os.ReadFile(p); err == nil {
			return b, p, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, "", err
		}
	}
	return nil, "", fmt.Errorf("this rewind binary has no rescue base archive built in: run 'make build' (which embeds it), "+
		"or pass --base FILE from 'make initramfs', or put %s next to the binary", BaseName)
}
