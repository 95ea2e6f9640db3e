package fsmap

import "io"

// readNTFS is a placeholder until the reader is written.
func readNTFS(io.ReaderAt, int64) (*Map, error) { return nil, ErrUnknown }
