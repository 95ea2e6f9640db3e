package rescue

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browser starts Debian's Chromium, headless, for the lab page tests
// (scripts/setup.sh installs it). The flags keep it off every network
// but loopback.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (scripts/setup.sh installs it): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	// The first call starts the browser, on a context without a timeout
	// (a timeout there would stop the browser).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// waitJS polls expr in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(wctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(200*time.Millisecond))); err != nil {
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML("body"))
		t.Fatalf("%s: %s never held: %v\npage:\n%s", what, expr, err, html)
	}
}

// The lab page in a real browser: posted progress appears and updates
// without a reload, a failed machine moves to the top with its error
// (shown as text, never as markup), and 200 machines fit.
func TestLabPageInBrowser(t *testing.T) {
	l := startLab(t, LabServerConfig{TokenFile: "token"})
	url := l.url + "/reports/"
	start := time.Now()
	ok := testReport("pc-ok", "52:54:00:00:03:01", StatusSuccess, start)
	ok.Finish(StatusSuccess, nil, start.Add(time.Minute))
	send(t, url, ok)
	send(t, url, restoring("pc-run", "52:54:00:00:03:02", start, 100, 1000))

	ctx := browser(t)
	nctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(nctx, chromedp.Navigate(url), chromedp.WaitReady("#rows")); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	waitJS(t, ctx, "page shows two machines", `document.querySelectorAll('#rows tr').length === 2`)
	// A mark that a reload would lose.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.rewindMark = 42`)); err != nil {
		t.Fatal(err)
	}

	// pc-run goes on; pc-bad fails with an error that is markup.
	send(t, url, restoring("pc-run", "52:54:00:00:03:02", start, 600, 1000))
	bad := restoring("pc-bad", "52:54:00:00:03:03", start, 10, 100)
	bad.Finish(StatusFailed, errString(`chunk 7: <img src=x onerror="window.pwned=1"> stored bytes do not match`), time.Now())
	send(t, url, bad)

	waitJS(t, ctx, "pc-run's progress updates", `(function(){
		for (const tr of document.querySelectorAll('#rows tr')) {
			if (tr.querySelector('td.machine').textContent.startsWith('pc-run ')) return tr.querySelector('progress').value === 60;
		}
		return false; })()`)
	waitJS(t, ctx, "the failed machine is first", `document.querySelector('#rows tr').dataset.phase === 'failed' &&
		document.querySelector('#rows tr td.machine').textContent.startsWith('pc-bad ')`)
	type state struct {
		Mark   int    `json:"mark"`
		Pwned  bool   `json:"pwned"`
		Images int    `json:"images"`
		Error  string `json:"error"`
		Phases string `json:"phases"`
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[state](`({
		mark: window.rewindMark || 0,
		pwned: !!window.pwned,
		images: document.querySelectorAll('img').length,
		error: document.querySelector('#rows tr td.error').textContent,
		phases: Array.from(document.querySelectorAll('#rows tr')).map(tr => tr.dataset.phase).join(' '),
	})`))
	if err != nil {
		t.Fatal(err)
	}
	if got.Mark != 42 {
		t.Errorf("the page was reloaded (its mark is gone): updates must come without a reload")
	}
	if got.Pwned || got.Images != 0 || !strings.Contains(got.Error, `<img src=x`) {
		t.Errorf("the error text became markup: pwned %v, %d img elements, error cell %q", got.Pwned, got.Images, got.Error)
	}
	if got.Phases != "failed restoring done" {
		t.Errorf("rows by phase: %q, want failed restoring done", got.Phases)
	}
	if dir := os.Getenv("REWIND_SCREENSHOTS"); dir != "" {
		if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
			os.WriteFile(dir+"/labview.png", png, 0o644)
		}
	}

	// 200 machines more, restoring at once.
	for i := range 200 {
		send(t, url, restoring(fmt.Sprintf("lab%03d", i), fmt.Sprintf("52:54:00:00:%02x:%02x", 4+i/256, i%256), start, int64(i), 200))
	}
	waitJS(t, ctx, "203 machines shown", `document.querySelectorAll('#rows tr').length === 203 &&
		document.querySelector('#rows tr').dataset.phase === 'failed' &&
		document.querySelector('#counts').textContent.startsWith('203 machines')`)
	if mark, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.rewindMark || 0`)); err != nil || mark != 42 {
		t.Errorf("the page was reloaded with 200 machines (mark %d, %v)", mark, err)
	}
}
