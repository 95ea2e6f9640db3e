package fsmap

import "io"

// readExt is a placeholder until the reader is written.
func readExt(io.ReaderAt, int64) (*Map, error) { return nil, ErrUnknown }
