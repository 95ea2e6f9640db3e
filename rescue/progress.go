package rescue

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/rewind-bmr/rewind/restore"
)

// progressEvery is how often a running restore tells the report server.
const progressEvery = 5 * time.Second

// progress wraps the console's progress display: with a report URL in the
// plan, it also POSTs the report, marked running and with the bytes done,
// every few seconds, so 'rewind serve' shows each machine's progress. The
// POSTs run in the background and never slow the restore down; a slow or
// absent server only loses updates.
func (r *Rescue) progress(show func(restore.Progress)) func(restore.Progress) {
	url, token := "", ""
	if r.settings != nil {
		url, token = r.settings.ReportURL, r.settings.ReportToken
	}
	if url == "" {
		return show
	}
	last := time.Now() // the first update after progressEvery, not at once
	var busy atomic.Bool
	return func(p restore.Progress) {
		show(p)
		if p.Final || time.Since(last) < progressEvery || !busy.CompareAndSwap(false, true) {
			return
		}
		last = time.Now()
		update := r.report.progressCopy(p.Done, p.Total) // a copy: the flow goes on filling in the original
		go func() {
			defer busy.Store(false)
			postUpdate(r.client, url, token, update)
		}()
	}
}

// postUpdate sends a running report, giving up after progressEvery: a slow
// or absent server only loses the update.
func postUpdate(client *http.Client, url, token string, update *Report) {
	ctx, cancel := context.WithTimeout(context.Background(), progressEvery)
	defer cancel()
	PostReport(ctx, client, url, token, update)
}

// setPhase records what the run does now and, with a report URL in the
// plan and the network up, tells the report server at once, in the
// background as progress updates do: the lab page shows each machine's
// phase, not only its restore's bytes. A slow or absent server loses the
// update and delays nothing.
func (r *Rescue) setPhase(phase string) {
	r.report.Phase = phase
	if r.settings == nil || r.settings.ReportURL == "" || !r.netUp || r.client == nil {
		return
	}
	url, token := r.settings.ReportURL, r.settings.ReportToken
	update := r.report.progressCopy(0, 0) // no disk runs between phases
	go postUpdate(r.client, url, token, update)
}
