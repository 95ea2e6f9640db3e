package vm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The probe guest runs: under TCG it prints its marker. This is what
// makes a silent probe under KVM mean "KVM hangs", not "the probe is
// broken".
func TestProbeSectorPrintsUnderTCG(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (scripts/setup.sh)")
	}
	disk := filepath.Join(t.TempDir(), "probe.img")
	if err := BlankDisk(disk, 1<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(probeSector(), 0)
	f.Close()
	start := time.Now()
	v := &VM{Accel: "tcg", MemoryMB: 64, Drives: []Drive{{Path: disk, Boot: true}}, StopWhen: probeMarker, Timeout: 30 * time.Second}
	out, err := v.Run(context.Background())
	if err != nil || !strings.Contains(out, probeMarker) {
		t.Fatalf("probe guest under TCG: %v, console %q; want %q", err, out, probeMarker)
	}
	t.Logf("probe guest printed %q under TCG after %.1fs", probeMarker, time.Since(start).Seconds())
}

// ProbeKVM returns within its bound whatever KVM does on this host.
func TestProbeKVMIsBounded(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (scripts/setup.sh)")
	}
	start := time.Now()
	err := ProbeKVM(context.Background(), t.TempDir(), 3*time.Second)
	took := time.Since(start)
	t.Logf("ProbeKVM: %v after %.1fs", err, took.Seconds())
	if took > 10*time.Second {
		t.Fatalf("ProbeKVM took %s with a 3s bound", took)
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\r\nb\r\n\r\nc\r\n", 2, "b | c"},
		{"one", 3, "one"},
		{"", 3, "(the console is empty)"},
	} {
		if got := LastLines(tc.in, tc.n); got != tc.want {
			t.Errorf("LastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// "info usernet" as QEMU 7.2 prints it: a hostfwd listener, a connection
// the guest has not answered, and one it accepted.
func TestGuestAccepted(t *testing.T) {
	const synSent = `Hub -1 (n0):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[SYN_SENT]      13       127.0.0.1 18080       10.0.2.15  8080     0     0
  TCP[HOST_FORWARD]   9       127.0.0.1 18080       10.0.2.15  8080     0     0
`
	const established = synSent + "  TCP[ESTABLISHED]   14       127.0.0.1 18080       10.0.2.15  8080     0     0\n"
	for _, tc := range []struct {
		name, usernet string
		port          int
		want          bool
	}{
		{"not answered", synSent, 8080, false},
		{"accepted", established, 8080, true},
		{"accepted on another port", established, 22, false},
		{"empty", "", 8080, false},
	} {
		if got := GuestAccepted(tc.usernet, tc.port); got != tc.want {
			t.Errorf("%s: GuestAccepted(port %d) = %v, want %v", tc.name, tc.port, got, tc.want)
		}
	}
}
