package snapshot

// lz4FrameBound is the largest standard LZ4 frame Rewind accepts for n raw
// bytes: header, n bytes stored in blocks with their size words, end mark and
// checksums, plus slack.
func lz4FrameBound(n int64) int64 {
	return n + n/255 + 1024
}
