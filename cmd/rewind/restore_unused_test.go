package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/machine"
)

// The summary says how much of the file systems' free space a version 3
// snapshot left out and whether it was zeroed or left with old bytes.
func TestPrintWipeUnused(t *testing.T) {
	for _, tc := range []struct {
		name string
		wipe machine.Wipe
		want []string
		not  []string
	}{
		{"full", machine.Wipe{Mode: machine.WipeFull, Uncovered: 3 << 20, Bytes: 3 << 20, Unused: 2 << 20, UnusedZeroed: 2 << 20},
			[]string{"unused    2.0 MiB of file-system free space", "all zeroed"}, []string{"left with"}},
		{"signatures", machine.Wipe{Mode: machine.WipeSignatures, Uncovered: 3 << 20, Bytes: 1 << 20, Unused: 2 << 20, UnusedZeroed: 512 << 10, OldRemains: true},
			[]string{"1.5 MiB left with the old disk's bytes (--wipe signatures)", "512.0 KiB zeroed"}, []string{"all zeroed"}},
		{"version 2 snapshot", machine.Wipe{Mode: machine.WipeFull, Uncovered: 3 << 20, Bytes: 3 << 20},
			nil, []string{"unused"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			printWipe(&b, &tc.wipe)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("summary for %+v:\n%s\nwant it to say %q", tc.wipe, b.String(), w)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(b.String(), w) {
					t.Errorf("summary for %+v:\n%s\nwant no %q", tc.wipe, b.String(), w)
				}
			}
		})
	}
}
