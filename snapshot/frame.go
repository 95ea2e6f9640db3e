package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/pierrec/lz4/v4"
)

// LZ4 frame format constants (lz4_Frame_format.md).
const (
	lz4Magic        = 0x184D2204
	lz4BlockMax     = 4 << 20 // block maximum size code 7
	lz4FlagVersion  = 1 << 6
	lz4FlagBlockInd = 1 << 5
	lz4FlagBlockSum = 1 << 4
	lz4FlagSize     = 1 << 3
	lz4FlagContent  = 1 << 2
	lz4FlagDictID   = 1 << 0
	lz4Uncompressed = 1 << 31
)

// lz4FrameBound is the largest standard LZ4 frame Rewind accepts for n raw
// bytes: header, n bytes stored in blocks with their size words, end mark and
// checksums, plus slack.
func lz4FrameBound(n int64) int64 {
	return n + n/255 + 1024
}

// FrameBound returns the size of a buffer that always holds the frame
// EncodeFrame makes of n raw bytes.
func FrameBound(n int) int {
	blocks := (n + lz4BlockMax - 1) / lz4BlockMax
	return 19 + blocks*4 + lz4.CompressBlockBound(n) + 4
}

// Encoder turns raw chunks into standard, self-contained LZ4 frames: one
// frame per chunk, independent blocks of at most 4 MiB, the content size in
// the header, no checksums (the manifest's SHA-256 covers the stored bytes).
// An Encoder is not safe for concurrent use; give each worker its own.
type Encoder struct {
	c lz4.CompressorCCompat
}

// EncodeFrame appends the LZ4 frame of raw to dst and returns the result.
func (e *Encoder) EncodeFrame(dst, raw []byte) ([]byte, error) {
	dst = binary.LittleEndian.AppendUint32(dst, lz4Magic)
	hdr := len(dst)
	dst = append(dst, lz4FlagVersion|lz4FlagBlockInd|lz4FlagSize, 7<<4)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(len(raw)))
	dst = append(dst, byte(xxh32(dst[hdr:], 0)>>8))
	for len(raw) > 0 {
		n := min(len(raw), lz4BlockMax)
		block := raw[:n]
		raw = raw[n:]
		sizeAt := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		bound := lz4.CompressBlockBound(n)
		if cap(dst)-len(dst) < bound {
			grown := make([]byte, len(dst), len(dst)+bound+len(raw)+64)
			copy(grown, dst)
			dst = grown
		}
		c, err := e.c.CompressBlock(block, dst[len(dst):len(dst)+bound])
		if err != nil {
			return nil, fmt.Errorf("lz4 compress: %w", err)
		}
		if c == 0 || c >= n {
			binary.LittleEndian.PutUint32(dst[sizeAt:], uint32(n)|lz4Uncompressed)
			dst = append(dst, block...)
			continue
		}
		binary.LittleEndian.PutUint32(dst[sizeAt:], uint32(c))
		dst = dst[:len(dst)+c]
	}
	return binary.LittleEndian.AppendUint32(dst, 0), nil // end mark
}

// ErrBadFrame is wrapped by every error DecodeFrame returns for malformed input.
var ErrBadFrame = errors.New("malformed LZ4 frame")

// DecodeFrame decompresses one standard LZ4 frame into dst, which must be
// exactly as long as the raw data the frame holds. It accepts any frame a
// conforming encoder writes (with or without checksums and content size),
// except dependent blocks and dictionaries, and refuses trailing bytes.
func DecodeFrame(dst, frame []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadFrame, fmt.Sprintf(format, args...))
	}
	if len(frame) < 7 || binary.LittleEndian.Uint32(frame) != lz4Magic {
		return bad("missing LZ4 magic number")
	}
	flg := frame[4]
	if flg>>6 != 1 {
		return bad("version %d", flg>>6)
	}
	if flg&lz4FlagDictID != 0 {
		return bad("dictionaries are not supported")
	}
	if flg&lz4FlagBlockInd == 0 {
		return bad("dependent blocks are not supported")
	}
	p := 6
	if flg&lz4FlagSize != 0 {
		if len(frame) < p+8 {
			return bad("truncated header")
		}
		if size := binary.LittleEndian.Uint64(frame[p:]); size != uint64(len(dst)) {
			return bad("content size %d, want %d", size, len(dst))
		}
		p += 8
	}
	if len(frame) < p+1 {
		return bad("truncated header")
	}
	if want := byte(xxh32(frame[4:p], 0) >> 8); frame[p] != want {
		return bad("header checksum")
	}
	p++
	out := 0
	for {
		if len(frame) < p+4 {
			return bad("truncated at offset %d", p)
		}
		word := binary.LittleEndian.Uint32(frame[p:])
		p += 4
		if word == 0 {
			break
		}
		size := int(word &^ lz4Uncompressed)
		if size > len(frame)-p {
			return bad("block of %d bytes runs past the frame end", size)
		}
		block := frame[p : p+size]
		p += size
		if flg&lz4FlagBlockSum != 0 {
			p += 4
		}
		if word&lz4Uncompressed != 0 {
			if size > len(dst)-out {
				return bad("more data than the chunk holds")
			}
			out += copy(dst[out:], block)
			continue
		}
		n, err := lz4.UncompressBlock(block, dst[out:])
		if err != nil {
			return bad("block at raw offset %d: %v", out, err)
		}
		out += n
	}
	if flg&lz4FlagContent != 0 {
		p += 4
	}
	if p != len(frame) {
		return bad("%d bytes after the end mark", len(frame)-p)
	}
	if out != len(dst) {
		return bad("frame holds %d bytes, want %d", out, len(dst))
	}
	return nil
}

// xxh32 is the 32-bit xxHash, used for the LZ4 frame header checksum.
func xxh32(b []byte, seed uint32) uint32 {
	const (
		p1 uint32 = 2654435761
		p2 uint32 = 2246822519
		p3 uint32 = 3266489917
		p4 uint32 = 668265263
		p5 uint32 = 374761393
	)
	n := uint32(len(b))
	var h uint32
	if len(b) >= 16 {
		v1, v2, v3, v4 := seed+p1+p2, seed+p2, seed, seed-p1
		round := func(v, in uint32) uint32 { return bits.RotateLeft32(v+in*p2, 13) * p1 }
		for ; len(b) >= 16; b = b[16:] {
			v1 = round(v1, binary.LittleEndian.Uint32(b))
			v2 = round(v2, binary.LittleEndian.Uint32(b[4:]))
			v3 = round(v3, binary.LittleEndian.Uint32(b[8:]))
			v4 = round(v4, binary.LittleEndian.Uint32(b[12:]))
		}
		h = bits.RotateLeft32(v1, 1) + bits.RotateLeft32(v2, 7) + bits.RotateLeft32(v3, 12) + bits.RotateLeft32(v4, 18)
	} else {
		h = seed + p5
	}
	h += n
	for ; len(b) >= 4; b = b[4:] {
		h = bits.RotateLeft32(h+binary.LittleEndian.Uint32(b)*p3, 17) * p4
	}
	for _, c := range b {
		h = bits.RotateLeft32(h+uint32(c)*p5, 11) * p1
	}
	h ^= h >> 15
	h *= p2
	h ^= h >> 13
	h *= p3
	h ^= h >> 16
	return h
}
