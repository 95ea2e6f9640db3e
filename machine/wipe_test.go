package machine

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/diskrestore"
)

func TestComplementAndSignatureAreas(t *testing.T) {
	const size = 100 * mib
	covered := []span{{Off: 0, End: 17 << 10}, {Off: mib, End: 40 * mib}, {Off: 50 * mib, End: 60 * mib}, {Off: size - 17<<10, End: size}}
	un := diskrestore.Complement(size, covered)
	if got, want := fmt.Sprint(un), fmt.Sprint([]span{{Off: 17 << 10, End: mib}, {Off: 40 * mib, End: 50 * mib}, {Off: 60 * mib, End: size - 17<<10}}); got != want {
		t.Fatalf("uncovered ranges of a %d-byte disk: got %s, want %s", size, got, want)
	}
	// An old partition from 70 to 80 MiB: its ends are zeroed too.
	sigs := signatureAreas(un, []span{{Off: 70 * mib, End: 80 * mib}, {Off: 2 * mib, End: 45 * mib}}, un)
	want := []span{
		{Off: 17 << 10, End: mib},                      // the whole gap after the table (under a MiB)
		{Off: 40 * mib, End: 41 * mib},                 // first MiB of the gap between partitions
		{Off: 44 * mib, End: 45 * mib},                 // last MiB of the old partition reaching into it
		{Off: 49 * mib, End: 50 * mib},                 // last MiB of the gap
		{Off: 60 * mib, End: 61 * mib},                 // first MiB of the tail
		{Off: 70 * mib, End: 71 * mib},                 // the old partition's first MiB
		{Off: 79 * mib, End: 80 * mib},                 // and last
		{Off: size - 17<<10 - mib, End: size - 17<<10}, // last MiB of the tail
	}
	if fmt.Sprint(sigs) != fmt.Sprint(want) {
		t.Errorf("signature areas:\n got %v\nwant %v", sigs, want)
	}
	if got := subtract(un, sigs); total(got)+total(sigs) != total(un) {
		t.Errorf("subtract: %d + %d bytes, want %d", total(got), total(sigs), total(un))
	}
}

func TestChooseWipe(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		requested string
		offloads  bool
		uncovered int64
		size      int64
		want      string
		why       string
	}{
		{WipeAuto, true, 900 * gib, 1000 * gib, WipeFull, "without writing"},
		// Nothing outside the extents; their unused ranges are still
		// not in the snapshot, so the reason must not say it covers all.
		{WipeAuto, false, 0, 1000 * gib, WipeFull, "partitions and boot areas span the whole target"},
		{WipeAuto, false, gib / 2, 1000 * gib, WipeFull, "only"},
		{WipeAuto, false, 40 * gib, 1000 * gib, WipeFull, "only"},
		{WipeAuto, false, 900 * gib, 1000 * gib, WipeSignatures, "90%"},
		{WipeFull, false, 900 * gib, 1000 * gib, WipeFull, "--wipe full"},
		{WipeSignatures, true, mib, 1000 * gib, WipeSignatures, "--wipe signatures"},
	} {
		got, why := chooseWipe(tc.requested, tc.offloads, tc.uncovered, tc.size)
		if got != tc.want || !strings.Contains(why, tc.why) {
			t.Errorf("chooseWipe(%s, offloads %v, %d of %d bytes uncovered) = %s (%s); want %s (%q)",
				tc.requested, tc.offloads, tc.uncovered, tc.size, got, why, tc.want, tc.why)
		}
	}
}

// naiveSubtract and naiveIntersect are the obvious quadratic versions,
// the reference for the linear ones on small inputs.
func naiveSubtract(a, b []span) []span {
	var out []span
	for _, r := range a {
		at := r.Off
		for _, s := range b {
			if s.End <= at || s.Off >= r.End {
				continue
			}
			if s.Off > at {
				out = append(out, span{Off: at, End: s.Off})
			}
			at = max(at, s.End)
		}
		if at < r.End {
			out = append(out, span{Off: at, End: r.End})
		}
	}
	return out
}

func naiveIntersect(a, b []span) []span {
	var out []span
	for _, s := range a {
		for _, r := range b {
			if lo, hi := max(s.Off, r.Off), min(s.End, r.End); lo < hi {
				out = append(out, span{Off: lo, End: hi})
			}
		}
	}
	return out
}

// randomSpans returns n sorted, disjoint spans below limit.
func randomSpans(rng *rand.Rand, n int, limit int64) []span {
	var out []span
	for range n {
		a, b := rng.Int64N(limit), rng.Int64N(limit)
		out = append(out, span{Off: min(a, b), End: max(a, b) + 1})
	}
	return merge(out)
}

// TestRangeArithmetic checks subtract, intersect and intersectAll against
// the quadratic reference on random ranges.
func TestRangeArithmetic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		a, b := randomSpans(rng, rng.IntN(12), 200), randomSpans(rng, rng.IntN(12), 200)
		if got, want := fmt.Sprint(subtract(a, b)), fmt.Sprint(naiveSubtract(a, b)); got != want {
			t.Fatalf("case %d: subtract(%v, %v): got %s, want %s", i, a, b, got, want)
		}
		if got, want := fmt.Sprint(intersectAll(a, b)), fmt.Sprint(naiveIntersect(a, b)); got != want {
			t.Fatalf("case %d: intersectAll(%v, %v): got %s, want %s", i, a, b, got, want)
		}
		if len(a) > 0 {
			if got, want := fmt.Sprint(intersect(a[0], b)), fmt.Sprint(naiveIntersect(a[:1], b)); got != want {
				t.Fatalf("case %d: intersect(%v, %v): got %s, want %s", i, a[0], b, got, want)
			}
		}
	}
}

// TestRangeArithmeticManyUnused runs the range arithmetic Apply does
// before it writes anything on a snapshot with 2^18 unused ranges, as
// many as a used-block capture of a 1 TiB partition may record (a hostile
// manifest may have snapshot.MaxUnused = 2^26). The quadratic versions
// took 25 s for 2^16 ranges and about 16 times as long for these: the
// restore sat at 0% for minutes before writing a byte (this test then
// ran into go test's timeout under -race).
func TestRangeArithmeticManyUnused(t *testing.T) {
	const n = 1 << 18
	const size = int64(n) * 256 << 10
	var unused, stored []span
	for i := range int64(n) {
		o := i * 256 << 10
		unused = append(unused, span{Off: o + 128<<10, End: o + 256<<10 - 4096})
		stored = append(stored, span{Off: o, End: o + 128<<10}, span{Off: o + 256<<10 - 4096, End: o + 256<<10})
	}
	uncovered := diskrestore.Complement(size, stored)
	if got, want := len(uncovered), n; got != want {
		t.Fatalf("uncovered ranges: got %d, want %d", got, want)
	}
	if gaps := subtract(uncovered, unused); len(gaps) != 0 {
		t.Errorf("subtract(uncovered, unused): got %d ranges (%d bytes) outside the extents, want none", len(gaps), total(gaps))
	}
	sigs := signatureAreas(nil, []span{{Off: 0, End: size / 2}, {Off: size / 2, End: size}}, uncovered)
	// Each MiB at an end of the old partitions: 4 uncovered ranges of 124 KiB.
	if got, want := total(sigs), int64(4*4*(124<<10)); got != want {
		t.Errorf("signature areas of two old partitions: got %d bytes, want %d", got, want)
	}
	if got, want := total(intersectAll(unused, uncovered)), total(unused); got != want {
		t.Errorf("intersectAll(unused, uncovered): got %d bytes, want %d", got, want)
	}
}
