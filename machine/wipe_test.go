package machine

import (
	"fmt"
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
