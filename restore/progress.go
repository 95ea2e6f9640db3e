package restore

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/rewind-bmr/rewind/internal/units"
)

// Progress display modes.
const (
	ProgressAuto  = "auto"  // live line on a terminal, plain lines otherwise
	ProgressLive  = "live"  // one line redrawn in place
	ProgressPlain = "plain" // a line every few seconds
	ProgressJSON  = "json"  // one JSON object per line, every second
	ProgressNone  = "none"
)

// ProgressPrinter renders Progress to a writer in one of the modes above.
// It is the one place where restore progress text is worded.
type ProgressPrinter struct {
	w     io.Writer
	mode  string
	label string
	every time.Duration
	mu    sync.Mutex
	last  time.Time
}

// NewProgressPrinter returns a printer; isTerminal decides what auto means.
// label names the work ("restore", "verify").
func NewProgressPrinter(w io.Writer, mode string, isTerminal bool, label string) (*ProgressPrinter, error) {
	if mode == ProgressAuto || mode == "" {
		mode = ProgressPlain
		if isTerminal {
			mode = ProgressLive
		}
	}
	every := map[string]time.Duration{ProgressLive: 200 * time.Millisecond, ProgressPlain: 5 * time.Second, ProgressJSON: time.Second, ProgressNone: 0}
	d, ok := every[mode]
	if !ok {
		return nil, fmt.Errorf("unknown progress mode %q: use auto, live, plain, json or none", mode)
	}
	return &ProgressPrinter{w: w, mode: mode, label: label, every: d}, nil
}

// Update prints p when enough time has passed since the last line, and
// always prints the final state.
func (pp *ProgressPrinter) Update(p Progress) {
	if pp.mode == ProgressNone {
		return
	}
	pp.mu.Lock()
	defer pp.mu.Unlock()
	now := time.Now()
	if !p.Final && now.Sub(pp.last) < pp.every {
		return
	}
	pp.last = now
	switch pp.mode {
	case ProgressJSON:
		b, _ := json.Marshal(struct {
			Event    string  `json:"event"`
			Done     int64   `json:"done_bytes"`
			Total    int64   `json:"total_bytes"`
			Percent  float64 `json:"percent"`
			Rate     float64 `json:"bytes_per_second"`
			Elapsed  float64 `json:"elapsed_seconds"`
			ETA      float64 `json:"eta_seconds"`
			Finished bool    `json:"finished"`
		}{pp.label, p.Done, p.Total, percent(p), rate(p), p.Elapsed.Seconds(), eta(p).Seconds(), p.Final})
		fmt.Fprintf(pp.w, "%s\n", b)
	case ProgressLive:
		end := ""
		if p.Final {
			end = "\n"
		}
		fmt.Fprintf(pp.w, "\r\033[K%s%s", FormatProgress(pp.label, p), end)
	default:
		fmt.Fprintln(pp.w, FormatProgress(pp.label, p))
	}
}

// FormatProgress words one progress line: a bar, bytes, rate and ETA.
func FormatProgress(label string, p Progress) string {
	const width = 24
	pc := percent(p)
	filled := int(pc / 100 * width)
	bar := strings.Repeat("#", filled) + strings.Repeat(".", width-filled)
	tail := "ETA " + formatDuration(eta(p))
	if p.Final {
		tail = "done in " + formatDuration(p.Elapsed)
	}
	return fmt.Sprintf("%s [%s] %5.1f%%  %s / %s  %.1f MB/s  %s",
		label, bar, pc, units.Bytes(p.Done), units.Bytes(p.Total), rate(p)/1e6, tail)
}

func percent(p Progress) float64 {
	if p.Total <= 0 {
		return 100
	}
	return 100 * float64(p.Done) / float64(p.Total)
}

func rate(p Progress) float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Done) / p.Elapsed.Seconds()
}

func eta(p Progress) time.Duration {
	r := rate(p)
	if r <= 0 || p.Done >= p.Total {
		return 0
	}
	return time.Duration(float64(p.Total-p.Done) / r * float64(time.Second))
}

func formatDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d >= time.Hour {
		return fmt.Sprintf("%dh%02dm%02ds", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}
