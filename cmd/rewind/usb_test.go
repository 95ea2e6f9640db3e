package main

import (
	"strings"
	"testing"
)

func TestUSBUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"usb"}, 2, "give one of --list-devices (-l) or --create (-c)"},
		{[]string{"usb", "-l", "-c"}, 2, "give one of"},
		{[]string{"usb", "-c", "-d", "1"}, 2, "--create needs --iso FILE and --device N"},
		{[]string{"usb", "--list-devices"}, 0, ""},
	} {
		code, out := rewind(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("rewind %s: got exit %d, %q; want exit %d with %q", strings.Join(tc.args, " "), code, out, tc.code, tc.want)
		}
	}
}
