package fsmap

import "io"

// readSwap is a placeholder until the reader is written.
func readSwap(io.ReaderAt, int64) (*Map, error) { return nil, ErrUnknown }
