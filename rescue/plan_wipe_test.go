package rescue

import (
	"strings"
	"testing"
)

// A machine entry's wipe is auto, full or signatures; anything else is
// refused when the plan is read, naming the entry and the value.
func TestPlanWipe(t *testing.T) {
	for _, tc := range []struct{ wipe, want, wantErr string }{
		{"", "", ""},
		{`wipe = "auto"`, "auto", ""},
		{`wipe = "full"`, "full", ""},
		{`wipe = "signatures"`, "signatures", ""},
		{`wipe = "quick"`, "", `plan machine pc1: wipe "quick": want auto, full or signatures`},
	} {
		p, err := ParsePlan([]byte("[[machine]]\nname = \"pc1\"\nsnapshot = \"media:/snapshots/pc1\"\n" + tc.wipe + "\n"))
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("plan with %s: got error %v, want %q", tc.wipe, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("plan with %s: %v", tc.wipe, err)
		case p.Machines[0].Wipe != tc.want:
			t.Errorf("plan with %s: machine pc1 wipe %q, want %q", tc.wipe, p.Machines[0].Wipe, tc.want)
		}
	}
}
