package rescue

import (
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/machine"
)

// TestSummaryUnused checks the console summary's line on file-system free
// space that a used-block snapshot does not store: all zeroed, or how much
// still holds the old disk's bytes.
func TestSummaryUnused(t *testing.T) {
	tests := []struct {
		name string
		wipe *machine.Wipe
		want []string
		not  []string
	}{
		{"all zeroed", &machine.Wipe{Mode: machine.WipeAuto, Uncovered: 600 << 20, Bytes: 600 << 20, Unused: 500 << 20, UnusedZeroed: 500 << 20, Method: "punch-hole"},
			[]string{"Unused:", "500.0 MiB of file-system free space", "all zeroed"}, []string{"left with the old disk's bytes"}},
		{"signatures only", &machine.Wipe{Mode: machine.WipeSignatures, Uncovered: 600 << 20, Bytes: 1 << 20, Unused: 500 << 20, OldRemains: true, Method: "punch-hole"},
			[]string{"Unused:", "0 B zeroed, 500.0 MiB left with the old disk's bytes", `wipe = "full"`}, nil},
		{"whole snapshot", &machine.Wipe{Mode: machine.WipeAuto, Uncovered: 1 << 20, Bytes: 1 << 20, Method: "punch-hole"},
			nil, []string{"Unused:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Summary(&Report{Wipe: tt.wipe})
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("summary lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(got, w) {
					t.Errorf("summary has %q:\n%s", w, got)
				}
			}
		})
	}
}
