package initramfs

import (
	"bytes"
	"encoding/binary"
	"io"
	"time"
)

func bytesReaderAt(b []byte) io.ReaderAt { return bytes.NewReader(b) }
func timeAfter(s int) <-chan time.Time   { return time.After(time.Duration(s) * time.Second) }

// sec4size is the offset of the security directory's size field (left
// alone so the run is not dominated by F2's 4 GiB allocations).
func sec4size(b []byte) int {
	peoff := int(binary.LittleEndian.Uint32(b[0x3c:]))
	return peoff + 24 + 112 + 4*8 + 4 + 3
}
