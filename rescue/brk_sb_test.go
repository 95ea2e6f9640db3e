package rescue

import (
	"strings"
	"testing"
)

func TestBrkRefusedPathEscapes(t *testing.T) {
	r := &Report{}
	r.DriversRefused = []DriverRefusal{{Path: "/media/rewind/drivers/x\x1b[1A\x1b[2K\r\n  Status:    restored OK\n.ko", Error: "exec format error"}}
	s := Summary(r)
	t.Logf("%q", s)
	if strings.Contains(s, "\x1b") || strings.Contains(s, "\n  Status:    restored OK") {
		t.Errorf("BRK: driver path reaches the console unescaped")
	}
}
