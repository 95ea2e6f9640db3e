package upload

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rewind-bmr/rewind/snapshot"
)

// ClientOptions configures a Client.
type ClientOptions struct {
	// HTTP is the client requests go through; nil: snapshot.NewHTTPClient(nil).
	// Redirects are never followed (the token would go with them).
	HTTP *http.Client
	// Token is the lab's upload token (the plan's [upload] token).
	Token string
	// Overwrite adds a generation when the name already has some (the
	// plan's overwrite); without it an existing name is refused at Open.
	Overwrite bool
	// Generation names this upload's generation (GenerationLayout); empty:
	// the server's clock. All disks of one capture share one.
	Generation string
	// RetryFor bounds how long a failing request is retried after its
	// first failure; 0: snapshot.DefaultRetryFor.
	RetryFor time.Duration
	// Log gets retry notices; nil: none.
	Log func(format string, args ...any)
}

// Client uploads one snapshot to the lab server: a snapshot.Sink. Open it
// before reading the disk, so that a wrong token or an existing name fails
// before any work; then hand it to snapshot.CaptureTo.
type Client struct {
	snap      *url.URL // the snapshot URL, http://host/NAME
	endpoint  string   // http://host/upload/NAME
	name      string
	http      *http.Client
	opt       ClientOptions
	session   string
	gen       string
	published string
}

// NewClient checks snapshotURL (http(s)://host/NAME, NAME as CheckName
// allows) and the options; nothing is sent before Open.
func NewClient(snapshotURL string, opt ClientOptions) (*Client, error) {
	u, err := url.Parse(snapshotURL)
	if err != nil {
		return nil, fmt.Errorf("upload: snapshot URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("upload: snapshot URL %s: want http:// or https://", u.Redacted())
	case u.Host == "":
		return nil, fmt.Errorf("upload: snapshot URL %s names no server", u.Redacted())
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return nil, fmt.Errorf("upload: snapshot URL %s: no user, query or fragment; the token goes in the plan's [upload] section", u.Redacted())
	}
	name := strings.TrimSuffix(strings.TrimPrefix(u.Path, "/"), "/")
	if err := CheckName(name); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	if opt.Token == "" {
		return nil, fmt.Errorf("upload to %s: no upload token: set token in the plan's [upload] section (rewind serve --upload-token holds the same)", u.Redacted())
	}
	if err := CheckToken(opt.Token); err != nil {
		return nil, fmt.Errorf("upload to %s: %w", u.Redacted(), err)
	}
	if opt.Generation != "" {
		if err := CheckGeneration(opt.Generation); err != nil {
			return nil, fmt.Errorf("upload to %s: %w", u.Redacted(), err)
		}
	}
	if opt.RetryFor <= 0 {
		opt.RetryFor = snapshot.DefaultRetryFor
	}
	if opt.Log == nil {
		opt.Log = func(string, ...any) {}
	}
	base := opt.HTTP
	if base == nil {
		base = snapshot.NewHTTPClient(nil)
	}
	hc := *base
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error { return http.ErrUseLastResponse }
	if t, ok := hc.Transport.(*http.Transport); ok {
		// Ask before sending a frame's body: the server may already
		// hold it, or refuse it.
		t = t.Clone()
		t.ExpectContinueTimeout = 5 * time.Second
		hc.Transport = t
	}
	snap := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/" + name}
	ep := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: Prefix + "/" + name}
	return &Client{snap: snap, endpoint: ep.String(), name: name, http: &hc, opt: opt}, nil
}

// String names the destination: the snapshot URL.
func (c *Client) String() string { return c.snap.String() }

// Published is the URL of the generation Commit published (restores read
// it, or NAME/latest); "" before.
func (c *Client) Published() string { return c.published }

// Generation is the session's generation, known after Open.
func (c *Client) Generation() string { return c.gen }

// Open starts the session. It fails at once when the server refuses the
// token (ErrUnauthorized), takes no uploads (ErrUploadsOff), holds the
// name without overwrite (ErrExists) or has no space (ErrNoSpace).
func (c *Client) Open(ctx context.Context) error {
	body, _ := json.Marshal(createRequest{Overwrite: c.opt.Overwrite, Generation: c.opt.Generation})
	var cr createResponse
	err := c.retry(ctx, "open the upload session", func() (bool, error) {
		code, msg, err := c.do(ctx, http.MethodPost, "", body, nil)
		if err != nil {
			return true, err
		}
		if code != http.StatusCreated {
			return c.refusal("open the upload session", code, msg)
		}
		if err := json.Unmarshal(msg, &cr); err != nil || cr.Session == "" || CheckGeneration(cr.Generation) != nil {
			return false, fmt.Errorf("the server's answer is not an upload session (%q): is %s a Rewind lab server?", truncate(msg), c.snap.Host)
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	c.session, c.gen = cr.Session, cr.Generation
	c.opt.Log("upload: session %s for %s, generation %s", c.session, c.snap, c.gen)
	return nil
}

// Put sends one frame. When the connection drops or the server answers
// 5xx, it asks the server what it holds and sends the frame again only if
// the server does not have it.
func (c *Client) Put(ctx context.Context, f snapshot.Frame) error {
	if c.session == "" {
		return fmt.Errorf("upload to %s: Put before Open", c.snap)
	}
	q := url.Values{"session": {c.session}, "chunk": {strconv.Itoa(f.Index)}, "segment": {strconv.Itoa(f.Segment)},
		"name": {f.Name}, "offset": {strconv.FormatInt(f.Offset, 10)}}
	hdr := http.Header{headerSHA256: {hex.EncodeToString(f.SHA256[:])}, "Expect": {"100-continue"}}
	what := fmt.Sprintf("send chunk %d (%s at offset %d)", f.Index, f.Name, f.Offset)
	ask := false
	return c.retry(ctx, what, func() (bool, error) {
		if ask {
			held, err := c.holds(ctx, f)
			if err != nil {
				return !errors.Is(err, ErrRefused), err
			}
			if held {
				return false, nil
			}
		}
		ask = true
		code, msg, err := c.do(ctx, http.MethodPut, q.Encode(), f.Data, hdr)
		if err != nil {
			return true, err
		}
		if code != http.StatusOK {
			return c.refusal(what, code, msg)
		}
		return false, nil
	})
}

// holds asks the server whether it has f already (true), is ready for it
// (false), or holds something else (an error: the session cannot go on).
func (c *Client) holds(ctx context.Context, f snapshot.Frame) (bool, error) {
	code, msg, err := c.do(ctx, http.MethodGet, url.Values{"session": {c.session}}.Encode(), nil, nil)
	if err != nil {
		return false, err
	}
	if code != http.StatusOK {
		again, err := c.refusal("ask what the server holds", code, msg)
		if !again {
			err = fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return false, err
	}
	var st statusResponse
	if err := json.Unmarshal(msg, &st); err != nil {
		return false, fmt.Errorf("the server's status is not JSON: %w", err)
	}
	var size int64 = -1
	if f.Segment < len(st.Segments) {
		size = st.Segments[f.Segment].Size
	} else if f.Segment == len(st.Segments) {
		size = 0
	}
	end := f.Offset + int64(len(f.Data))
	switch {
	case st.Chunks == f.Index+1 && size == end:
		c.opt.Log("upload: the server has chunk %d already", f.Index)
		return true, nil
	case st.Chunks == f.Index && size == f.Offset:
		c.opt.Log("upload: resuming at chunk %d (%s at offset %d)", f.Index, f.Name, f.Offset)
		return false, nil
	}
	return false, fmt.Errorf("%w: the server holds %d chunks and %d bytes of segment %d, the client is at chunk %d, offset %d: the upload cannot resume; capture again",
		ErrRefused, st.Chunks, size, f.Segment, f.Index, f.Offset)
}

// Commit sends the manifest (and signature); the server checks it against
// every frame, then publishes NAME/<generation> and points NAME/latest at it.
func (c *Client) Commit(ctx context.Context, m *snapshot.Manifest, data, signature []byte) error {
	if c.session == "" {
		return fmt.Errorf("upload to %s: Commit before Open", c.snap)
	}
	hdr := http.Header{}
	if signature != nil {
		hdr.Set(headerSignature, base64.StdEncoding.EncodeToString(signature))
	}
	q := url.Values{"session": {c.session}, "commit": {"1"}}.Encode()
	var cr commitResponse
	err := c.retry(ctx, "commit the manifest", func() (bool, error) {
		code, msg, err := c.do(ctx, http.MethodPut, q, data, hdr)
		if err != nil {
			return true, err
		}
		if code != http.StatusOK {
			return c.refusal("commit the manifest", code, msg)
		}
		if err := json.Unmarshal(msg, &cr); err != nil || cr.Published != c.name+"/"+c.gen {
			return false, fmt.Errorf("the server's answer names no publication of %s/%s: %q", c.name, c.gen, truncate(msg))
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	published := (&url.URL{Scheme: c.snap.Scheme, Host: c.snap.Host, Path: "/" + cr.Published}).String()
	c.session = ""
	err = c.retry(ctx, "read the published snapshot back", func() (bool, error) { return c.readBack(ctx, published, m, data) })
	c.http.CloseIdleConnections()
	if err != nil {
		return err
	}
	c.published = published
	c.opt.Log("upload: published %s", c.published)
	return nil
}

// readBack checks that the server serves what it said it published, as a
// restore reads it (plain GET and HEAD, without the token): the manifest's
// bytes and every segment's size.
func (c *Client) readBack(ctx context.Context, published string, m *snapshot.Manifest, data []byte) (bool, error) {
	get := func(method, name string, limit int64) (*http.Response, []byte, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*snapshot.StallTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, published+"/"+name, nil)
		if err != nil {
			return nil, nil, err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
		return resp, body, err
	}
	bad := func(format string, args ...any) (bool, error) {
		return false, fmt.Errorf("%w: the lab server said it published %s, but %s: the snapshot is not usable there; check the server's log and disk, then capture again",
			ErrRefused, published, fmt.Sprintf(format, args...))
	}
	resp, body, err := get(http.MethodGet, snapshot.ManifestName, int64(len(data))+1)
	if err != nil {
		return true, err
	}
	switch {
	case resp.StatusCode >= 500:
		return true, fmt.Errorf("GET %s/%s: %s", published, snapshot.ManifestName, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return bad("GET %s answers %s", snapshot.ManifestName, resp.Status)
	case !bytes.Equal(body, data):
		return bad("the %s it serves differs from the one sent", snapshot.ManifestName)
	}
	for _, g := range m.Segments {
		resp, _, err := get(http.MethodHead, g.Name, 0)
		if err != nil {
			return true, err
		}
		switch {
		case resp.StatusCode >= 500:
			return true, fmt.Errorf("HEAD %s/%s: %s", published, g.Name, resp.Status)
		case resp.StatusCode != http.StatusOK:
			return bad("HEAD %s answers %s", g.Name, resp.Status)
		case resp.ContentLength != g.Size:
			return bad("segment %s is %d bytes there, %d were sent", g.Name, resp.ContentLength, g.Size)
		}
	}
	return false, nil
}

// Abort tells the server to drop the session (best effort: an idle session
// expires anyway).
func (c *Client) Abort() {
	if c.session == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := c.do(ctx, http.MethodDelete, url.Values{"session": {c.session}}.Encode(), nil, nil); err != nil {
		c.opt.Log("upload: could not drop session %s on the server (it expires by itself): %v", c.session, err)
	}
	c.session = ""
	c.http.CloseIdleConnections()
}

// do sends one request and reads its answer (at most 64 KiB of it).
func (c *Client) do(ctx context.Context, method, query string, body []byte, hdr http.Header) (int, []byte, error) {
	// Bound each request: the stall timeout plus 64 KiB/s for the body.
	ctx, cancel := context.WithTimeout(ctx, 2*snapshot.StallTimeout+time.Duration(len(body)>>16)*time.Second)
	defer cancel()
	u := c.endpoint
	if query != "" {
		u += "?" + query
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.opt.Token)
	if body != nil && method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return 0, nil, fmt.Errorf("%w: the server redirects the upload to %s (%s): use that server's URL in the plan",
			errRedirect, resp.Header.Get("Location"), resp.Status)
	}
	return resp.StatusCode, msg, nil
}

var errRedirect = errors.New("redirected")

// refusal turns a server's non-success answer into an error, and says
// whether to retry it (5xx, 408, 429).
func (c *Client) refusal(what string, code int, msg []byte) (bool, error) {
	text := strings.TrimSpace(truncate(msg))
	var kind error
	switch {
	case code == http.StatusUnauthorized:
		kind = ErrUnauthorized
	case code == http.StatusForbidden:
		kind = ErrUploadsOff
	case code == http.StatusConflict:
		kind = ErrExists
	case code == http.StatusInsufficientStorage:
		kind = ErrNoSpace
	case code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		return true, fmt.Errorf("%s: %d %s: %s", what, code, http.StatusText(code), text)
	default:
		kind = ErrRefused
	}
	return false, fmt.Errorf("%s: %w (%d %s): %s", what, kind, code, http.StatusText(code), text)
}

func truncate(b []byte) string {
	if len(b) > 2000 {
		b = b[:2000]
	}
	return string(b)
}

// retry runs attempt until it succeeds, fails for good, the context ends,
// or RetryFor has passed since the first failure; waits double from 250 ms
// to 15 s.
func (c *Client) retry(ctx context.Context, what string, attempt func() (retry bool, err error)) error {
	wait := 250 * time.Millisecond
	var failing time.Time
	for i := 1; ; i++ {
		again, err := attempt()
		if err == nil {
			return nil
		}
		if ce := snapshot.CertError(err); ce != nil {
			return fmt.Errorf("upload to %s: %s: %w", c.snap, what, ce)
		}
		if !again || errors.Is(err, errRedirect) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("upload to %s: %s: %w", c.snap, what, ctx.Err())
			}
			return fmt.Errorf("upload to %s: %w", c.snap, err)
		}
		if failing.IsZero() {
			failing = time.Now()
		}
		if time.Since(failing) >= c.opt.RetryFor {
			return fmt.Errorf("upload to %s: %s: gave up after %d attempts in %s: %w; check that the lab server is up and reachable, then capture again",
				c.snap, what, i, time.Since(failing).Round(time.Second), err)
		}
		c.opt.Log("upload: %s: attempt %d failed, retrying in %s: %v", what, i, wait, err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("upload to %s: %s: %w", c.snap, what, ctx.Err())
		}
		wait = min(2*wait, 15*time.Second)
	}
}
