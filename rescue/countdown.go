package rescue

import (
	"context"
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
	defer func() {
		// Stop the readers, then give the consoles back to whoever is next.
		for _, c := range consoles {
			c.SetReadDeadline(time.Now())
		}
		wg.Wait()
		for _, c := range consoles {
			c.SetReadDeadline(time.Time{})
		}
	}()

	d, why := countdown(ctx, consoles, keys, p)
	writeAll(consoles, countdownOutcome(d, why))
	return d, why
}

func countdown(ctx context.Context, consoles []Console, keys <-chan keyEvent, p Prompt) (Decision, string) {
	def := DecideRestore
	if p.Default == DefaultAbort {
		def = DecideAbort
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for left := p.Seconds; left > 0; {
		writeAll(consoles, countdownTick(left, p.Default))
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
