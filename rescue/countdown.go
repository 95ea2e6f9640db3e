package rescue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Decision is the outcome of the countdown.
type Decision int

// Decisions.
const (
	DecideRestore Decision = iota
	DecideAbort
	DecideShell
)

func (d Decision) String() string {
	switch d {
	case DecideRestore:
		return "restore"
	case DecideShell:
		return "shell"
	}
	return "abort"
}

// Console is a terminal the rescue environment talks on: the serial port,
// the VGA console, or a pipe in tests. Deadlines stop the countdown's
// readers so that they never steal the rescue shell's input.
type Console interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
}

type keyEvent struct {
	console int
	b       byte
}

const (
	keyEsc = 0x1b
	// escWait is how long an Esc waits for the rest of an escape sequence
	// (arrow keys send Esc [ A): a lone Esc aborts, a sequence is a key.
	escWait = 150 * time.Millisecond
)

// RunCountdown shows the prompt on every console and counts down. Any key
// decides restore at once, Esc aborts, s opens the shell; when the count
// ends the prompt's default is done. The returned reason says why.
func RunCountdown(ctx context.Context, consoles []Console, p Prompt) (Decision, string) {
	writeAll(consoles, countdownBanner(p))
	keys, stop := readKeys(consoles)
	d, why := countdown(ctx, consoles, keys, p)
	stop()
	writeAll(consoles, countdownOutcome(d, why, p))
	return d, why
}

// readKeys reads single key presses from every console until stop is
// called; stop then gives the consoles back to whoever is next (the shell).
func readKeys(consoles []Console) (<-chan keyEvent, func()) {
	keys := make(chan keyEvent, 16)
	var wg sync.WaitGroup
	for i, c := range consoles {
		c.SetReadDeadline(time.Time{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf [1]byte
			for {
				n, err := c.Read(buf[:])
				if err != nil {
					return
				}
				if n == 1 {
					select {
					case keys <- keyEvent{i, buf[0]}:
					default:
					}
				}
			}
		}()
	}
	return keys, func() {
		for _, c := range consoles {
			c.SetReadDeadline(time.Now())
		}
		wg.Wait()
		for _, c := range consoles {
			c.SetReadDeadline(time.Time{})
		}
	}
}

// ErrMenuAborted is returned by RunMenu when Esc is pressed or nobody
// picks an entry in time.
var ErrMenuAborted = errors.New("no entry was picked")

// RunMenu shows text on every console and waits for a digit 1..n (the
// entry picked, returned 0-based); Esc or the timeout abort.
func RunMenu(ctx context.Context, consoles []Console, text string, n int, timeout time.Duration) (int, error) {
	writeAll(consoles, text)
	keys, stop := readKeys(consoles)
	defer stop()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-t.C:
			return -1, fmt.Errorf("%w within %s", ErrMenuAborted, timeout)
		case k := <-keys:
			if k.b == keyEsc && !escapeSequence(keys, k.console) {
				return -1, fmt.Errorf("%w: Esc was pressed", ErrMenuAborted)
			}
			if i := int(k.b - '1'); k.b >= '1' && i < n {
				return i, nil
			}
		}
	}
}

func countdown(ctx context.Context, consoles []Console, keys <-chan keyEvent, p Prompt) (Decision, string) {
	def := DecideRestore
	if p.Default == DefaultAbort {
		def = DecideAbort
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for left := p.Seconds; left > 0; {
		writeAll(consoles, countdownTick(left, p))
		select {
		case <-ctx.Done():
			return DecideAbort, whyCancelled
		case <-tick.C:
			left--
		case k := <-keys:
			switch k.b {
			case 's', 'S':
				return DecideShell, whyShellKey
			case keyEsc:
				if escapeSequence(keys, k.console) {
					return DecideRestore, whyKey
				}
				return DecideAbort, whyEsc
			default:
				return DecideRestore, whyKey
			}
		}
	}
	return def, whyTimeout
}

// escapeSequence reports whether the Esc just read from console starts an
// escape sequence rather than being the Esc key itself.
func escapeSequence(keys <-chan keyEvent, console int) bool {
	t := time.NewTimer(escWait)
	defer t.Stop()
	for {
		select {
		case k := <-keys:
			if k.console == console {
				return k.b == '[' || k.b == 'O'
			}
		case <-t.C:
			return false
		}
	}
}

func writeAll(consoles []Console, s string) {
	for _, c := range consoles {
		io.WriteString(c, s)
	}
}
