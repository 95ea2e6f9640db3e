package machine

import (
	"fmt"
	"strings"
	"testing"
)

func TestComplementAndSignatureAreas(t *testing.T) {
	const size = 100 * mib
	covered := []span{{0, 17 << 10}, {mib, 40 * mib}, {50 * mib, 60 * mib}, {size - 17<<10, size}}
	un := complement(size, covered)
	if got, want := fmt.Sprint(un), fmt.Sprint([]span{{17 << 10, mib}, {40 * mib, 50 * mib}, {60 * mib, size - 17<<10}}); got != want {
		t.Fatalf("uncovered ranges of a %d-byte disk: got %s, want %s", size, got, want)
	}
	// An old partition from 70 to 80 MiB: its ends are zeroed too.
	sigs := signatureAreas(un, []span{{70 * mib, 80 * mib}, {2 * mib, 45 * mib}})
	want := []span{
		{17 << 10, mib},                      // the whole gap after the table (under a MiB)
		{40 * mib, 41 * mib},                 // first MiB of the gap between partitions
		{44 * mib, 45 * mib},                 // last MiB of the old partition reaching into it
		{49 * mib, 50 * mib},                 // last MiB of the gap
		{60 * mib, 61 * mib},                 // first MiB of the tail
		{70 * mib, 71 * mib},                 // the old partition's first MiB
		{79 * mib, 80 * mib},                 // and last
		{size - 17<<10 - mib, size - 17<<10}, // last MiB of the tail
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
