package rescue

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// pipeConsole is a Console fed by a pipe: the test types into w, the
// countdown's output is collected.
type pipeConsole struct {
	r   *os.File
	mu  sync.Mutex
	out strings.Builder
}

func (c *pipeConsole) Read(p []byte) (int, error)        { return c.r.Read(p) }
func (c *pipeConsole) SetReadDeadline(t time.Time) error { return c.r.SetReadDeadline(t) }
func (c *pipeConsole) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func newPipeConsole(t *testing.T) (*pipeConsole, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return &pipeConsole{r: r}, w
}

func TestCountdownKeys(t *testing.T) {
	for _, tc := range []struct {
		name    string
		keys    string
		seconds int
		def     string
		want    Decision
		why     string
	}{
		{"esc aborts", "\x1b", 30, DefaultRestore, DecideAbort, whyEsc},
		{"any key restores", "x", 30, DefaultAbort, DecideRestore, whyKey},
		{"enter restores", "\r", 30, DefaultAbort, DecideRestore, whyKey},
		{"s opens the shell", "s", 30, DefaultRestore, DecideShell, whyShellKey},
		{"arrow key is a key, not Esc", "\x1b[A", 30, DefaultAbort, DecideRestore, whyKey},
		{"default restore", "", 1, DefaultRestore, DecideRestore, whyTimeout},
		{"default abort", "", 1, DefaultAbort, DecideAbort, whyTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, w := newPipeConsole(t)
			quiet, _ := newPipeConsole(t) // a second console nobody types on
			if tc.keys != "" {
				go func() {
					time.Sleep(50 * time.Millisecond)
					w.WriteString(tc.keys)
				}()
			}
			start := time.Now()
			d, why := RunCountdown(context.Background(), []Console{quiet, c}, Prompt{Snapshot: "media:/snapshots/pc1", Target: "/dev/vda, QEMU, 64 MiB", Seconds: tc.seconds, Default: tc.def})
			if d != tc.want || why != tc.why {
				t.Errorf("keys %q: got %s (%s), want %s (%s)", tc.keys, d, why, tc.want, tc.why)
			}
			if tc.keys != "" && time.Since(start) > 5*time.Second {
				t.Errorf("keys %q: the decision took %s", tc.keys, time.Since(start))
			}
			for _, con := range []*pipeConsole{c, quiet} {
				out := con.out.String()
				if !strings.Contains(out, "ALL DATA ON THE TARGET DISK WILL BE LOST") || !strings.Contains(out, "/dev/vda, QEMU, 64 MiB") {
					t.Errorf("a console did not show the warning and the target:\n%s", out)
				}
			}
		})
	}
}

func TestCountdownReleasesConsoles(t *testing.T) {
	c, w := newPipeConsole(t)
	w.WriteString("x")
	if d, _ := RunCountdown(context.Background(), []Console{c}, Prompt{Seconds: 30}); d != DecideRestore {
		t.Fatalf("got %s, want restore", d)
	}
	// The next reader (the shell) gets what is typed after the countdown.
	w.WriteString("y")
	buf := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(buf); n != 1 || buf[0] != 'y' {
		t.Errorf("after the countdown: read %q, %v; want \"y\"", buf[:n], err)
	}
}

func TestMachineMenu(t *testing.T) {
	p, err := ParsePlan([]byte(fullPlan))
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{MACs: []string{"aa:bb:cc:dd:ee:ff"}}
	for _, tc := range []struct {
		name    string
		keys    string
		want    int
		wantErr string
	}{
		{"second entry", "x2", 1, ""},
		{"out of range ignored", "93", 2, ""},
		{"esc aborts", "\x1b", -1, "Esc was pressed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, w := newPipeConsole(t)
			go func() {
				time.Sleep(50 * time.Millisecond)
				w.Write([]byte(tc.keys))
			}()
			got, err := RunMenu(context.Background(), []Console{c}, machineMenu(p, id), len(p.Machines), 5*time.Second)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrMenuAborted) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %d, %v; want an abort with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want entry %d", got, err, tc.want)
			}
			c.mu.Lock()
			shown := c.out.String()
			c.mu.Unlock()
			if !strings.Contains(shown, "aa:bb:cc:dd:ee:ff") || !strings.Contains(shown, "2) lab") {
				t.Errorf("menu does not name the MAC and the entries:\n%s", shown)
			}
		})
	}
	c, _ := newPipeConsole(t)
	if _, err := RunMenu(context.Background(), []Console{c}, "menu", 3, 100*time.Millisecond); !errors.Is(err, ErrMenuAborted) {
		t.Errorf("nobody at the console: got %v, want ErrMenuAborted", err)
	}
}
