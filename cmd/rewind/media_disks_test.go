package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// The note about a snapshot no plan entry reads knows [[machine.disk]].
func TestWarnSnapshotNotInPlanDisks(t *testing.T) {
	for _, tc := range []struct {
		name, plan string
		note       bool
	}{
		{"single-disk entry", "[[machine]]\nsnapshot = \"media:/snapshots/pc1\"\n", false},
		{"second disk entry", "[[machine]]\n[[machine.disk]]\nsnapshot = \"media:/snapshots/sys\"\ntarget = \"serial=A\"\n[[machine.disk]]\nsnapshot = \"media:/snapshots/pc1\"\ntarget = \"serial=B\"\n", false},
		{"no entry", "[[machine]]\nsnapshot = \"media:/snapshots/other\"\n", true},
	} {
		var out bytes.Buffer
		cmd := &cobra.Command{}
		cmd.SetErr(&out)
		warnSnapshotNotInPlan(cmd, []byte(tc.plan), "/srv/snapshots/pc1")
		if got := strings.Contains(out.String(), "no [[machine]] of the plan has"); got != tc.note {
			t.Errorf("%s: note printed %v, want %v: %q", tc.name, got, tc.note, out.String())
		}
	}
}
