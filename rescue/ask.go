package rescue

import (
	"context"
	"time"
)

// AskYesNo puts question on every console and waits for y or n. Esc
// answers no. Nobody answering within timeout is answered=false: the
// caller takes the safe choice, so an unattended machine never hangs.
func AskYesNo(ctx context.Context, consoles []Console, question string, timeout time.Duration) (yes, answered bool) {
	if len(consoles) == 0 || timeout <= 0 {
		return false, false
	}
	writeAll(consoles, askPrompt(question, timeout))
	keys, stop := readKeys(consoles)
	defer stop()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, false
		case <-t.C:
			writeAll(consoles, askNoAnswer)
			return false, false
		case k := <-keys:
			switch k.b {
			case 'y', 'Y':
				writeAll(consoles, askYes)
				return true, true
			case 'n', 'N', keyEsc:
				writeAll(consoles, askNo)
				return false, true
			}
		}
	}
}

// consoleAsker is the Asker of the rescue flow: the question goes to every
// console in key mode, and to the log.
type consoleAsker struct{ r *Rescue }

func (r *Rescue) asker() Asker { return consoleAsker{r} }

func (a consoleAsker) Ask(question string, timeout time.Duration) (bool, bool) {
	if len(a.r.ttys) == 0 || timeout <= 0 {
		a.r.log.Printf("%s: %s", question, askUnattended)
		return false, false
	}
	var cs []Console
	for _, t := range a.r.ttys {
		t.KeyMode()
		cs = append(cs, t)
	}
	defer func() {
		for _, t := range a.r.ttys {
			t.Restore()
		}
	}()
	return AskYesNo(context.Background(), cs, question, timeout)
}
