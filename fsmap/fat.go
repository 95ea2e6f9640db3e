package fsmap

import "io"

// readFAT is a placeholder until the reader is written.
func readFAT(io.ReaderAt, int64) (*Map, error) { return nil, ErrUnknown }
