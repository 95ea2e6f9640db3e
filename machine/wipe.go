package machine

import (
	"fmt"
	"sort"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/units"
)

// Wipe modes: what Apply does with the target's bytes that the snapshot
// does not cover (the gap after the table, between partitions, the tail).
const (
	// WipeAuto is WipeFull when the target zeroes cheaply (write-zeroes
	// offload, an image file) or the uncovered bytes outside the extents
	// are few, else WipeSignatures for those; the unused ranges inside
	// file systems (free blocks the snapshot does not store) are zeroed
	// either way.
	WipeAuto = "auto"
	// WipeFull makes every uncovered byte read as zeros: the target then
	// reads back equal to the captured disk.
	WipeFull = "full"
	// WipeSignatures zeroes the first and last MiB of every uncovered
	// range and of every old partition that reaches into one, where every
	// signature blkid and wipefs look for lies (file systems, md, LVM, ZFS
	// labels, iso9660, a backup GPT); the rest keeps its old bytes, the
	// free space inside restored file systems too.
	WipeSignatures = "signatures"
)

// Thresholds for WipeAuto: below either, written zeros are cheap enough.
const (
	autoFullBytes   = 1 << 30 // uncovered bytes
	autoFullPercent = 5       // of the target
	signatureWindow = 1 << 20 // bytes zeroed at each end of a range
)

// ParseWipe checks a wipe mode from a flag or a plan; "" is WipeAuto.
func ParseWipe(s string) (string, error) {
	switch s {
	case "", WipeAuto:
		return WipeAuto, nil
	case WipeFull, WipeSignatures:
		return s, nil
	}
	return "", fmt.Errorf("wipe %q: want auto, full or signatures", s)
}

// Wipe says what Apply did with the bytes the snapshot does not cover.
type Wipe struct {
	Requested  string  `json:"requested"`       // auto, full or signatures
	Mode       string  `json:"mode"`            // full or signatures: what ran
	Why        string  `json:"why"`             // why that mode
	Uncovered  int64   `json:"uncovered_bytes"` // bytes of the target the snapshot does not cover
	Bytes      int64   `json:"zeroed_bytes"`    // of them, zeroed (all in full mode)
	Method     string  `json:"method"`          // how (restore.Describe), e.g. "write-zeroes offload (unmap)"
	Seconds    float64 `json:"seconds"`         // time spent zeroing
	Calls      int     `json:"calls"`           // zeroing operations (restore.Zeroer.Calls)
	OldRemains bool    `json:"old_remains"`     // signatures mode: the rest still holds the old disk's bytes
	// Unused is the part of Uncovered that the snapshot records as unused
	// inside its file systems (free blocks not stored: format version 3),
	// UnusedZeroed the part of it zeroed (all in full mode; in signatures
	// mode only where an old partition's signature areas lie).
	Unused       int64 `json:"unused_bytes,omitempty"`
	UnusedZeroed int64 `json:"unused_zeroed_bytes,omitempty"`
}

// span is a byte range [Off, End) of the target.
type span = diskrestore.Span

// intersect returns the parts of s that lie in one of the sorted,
// disjoint ranges.
func intersect(s span, ranges []span) []span {
	var out []span
	for _, r := range ranges {
		lo, hi := max(s.Off, r.Off), min(s.End, r.End)
		if lo < hi {
			out = append(out, span{Off: lo, End: hi})
		}
	}
	return out
}

// signatureAreas returns the ranges signatures mode zeroes: the first and
// last MiB of every gap (a range outside the snapshot's extents), and of
// every old partition, as far as they lie in uncovered ranges (the gaps
// and the unused ranges inside file systems). The result is sorted and
// disjoint.
func signatureAreas(gaps, oldParts, uncovered []span) []span {
	var areas []span
	ends := func(s span) []span {
		return []span{{Off: s.Off, End: min(s.Off+signatureWindow, s.End)}, {Off: max(s.End-signatureWindow, s.Off), End: s.End}}
	}
	for _, r := range gaps {
		areas = append(areas, ends(r)...)
	}
	for _, p := range oldParts {
		for _, e := range ends(p) {
			areas = append(areas, intersect(e, uncovered)...)
		}
	}
	return merge(areas)
}

// intersectAll returns the parts of the sorted, disjoint ranges a that lie
// in one of the sorted, disjoint ranges b.
func intersectAll(a, b []span) []span {
	var out []span
	for _, s := range a {
		out = append(out, intersect(s, b)...)
	}
	return out
}

// merge sorts ranges and joins those that overlap or touch.
func merge(r []span) []span {
	sort.Slice(r, func(i, j int) bool { return r[i].Off < r[j].Off })
	var out []span
	for _, s := range r {
		if s.End <= s.Off {
			continue
		}
		if n := len(out); n > 0 && s.Off <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, s.End)
			continue
		}
		out = append(out, s)
	}
	return out
}

func total(r []span) int64 {
	var n int64
	for _, s := range r {
		n += s.End - s.Off
	}
	return n
}

// chooseWipe resolves WipeAuto and says why.
func chooseWipe(requested string, offloads bool, uncovered, size int64) (mode, why string) {
	switch {
	case requested != WipeAuto:
		return requested, "--wipe " + requested
	case uncovered == 0:
		return WipeFull, "the snapshot covers the whole target"
	case offloads:
		return WipeFull, "the target zeroes without writing data"
	case uncovered < autoFullBytes || uncovered*100 < size*autoFullPercent:
		return WipeFull, fmt.Sprintf("only %s is not covered by the snapshot", units.Bytes(uncovered))
	}
	return WipeSignatures, fmt.Sprintf("zeroing %s (%d%% of the target) would mean writing it: only signature areas are zeroed",
		units.Bytes(uncovered), uncovered*100/size)
}
