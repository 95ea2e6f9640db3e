package rescue

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testca"
	"github.com/rewind-bmr/rewind/snapshot"
)

// labServer serves body over https on 127.0.0.1 with a certificate of a
// CA made here; it returns the server and the CA's PEM.
func labServer(t *testing.T, body string) (*httptest.Server, string) {
	t.Helper()
	ca := testca.New(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Localhost(t)}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, string(ca.PEM)
}

// The plan's ca key is checked when the plan is parsed, and its CA is
// trusted for the files the rescue environment fetches over https (plans,
// install files); without it the fetch fails at once naming the problem.
func TestPlanCA(t *testing.T) {
	srv, caPEM := labServer(t, "hello from the lab")
	const machine = "\n[[machine]]\nsnapshot = \"media:/snapshots/pc1\"\n"

	if _, err := ParsePlan([]byte(`ca = "-----BEGIN PRIVATE KEY-----"` + machine)); err == nil || !strings.Contains(err.Error(), "the plan's ca key holds no PEM certificate") {
		t.Errorf("plan with a key as ca: got %v, want an error naming the plan's ca key", err)
	}
	withCA, err := ParsePlan([]byte("ca = '''\n" + caPEM + "'''\n" + machine))
	if err != nil {
		t.Fatalf("plan with the lab's CA: %v", err)
	}
	without, err := ParsePlan([]byte(machine))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		plan *Plan
		want string // "" means the body is read
	}{
		{"plan without ca", without, "unknown authority"},
		{"plan with the lab's ca", withCA, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			roots, err := planRoots(tc.plan)
			if err != nil {
				t.Fatal(err)
			}
			// The network counts as up: nothing here touches the host's NICs.
			r := &Rescue{netUp: true, roots: roots, client: httpClient(roots)}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			data, err := r.readLocation(ctx, srv.URL+"/install/motd")
			if tc.want == "" {
				if err != nil || string(data) != "hello from the lab" {
					t.Fatalf("GET %s: got %q, %v; want the body", srv.URL, data, err)
				}
				return
			}
			if !errors.Is(err, snapshot.ErrCertificate) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ca key") {
				t.Fatalf("GET %s: got %v; want a certificate error saying %q and naming the plan's ca key", srv.URL, err, tc.want)
			}
		})
	}
}

// A plan or install file fetched over https is not fetched over plain http
// when the server redirects there (a network attacker could then change
// it), and a plan larger than the 1 MiB read is refused, not truncated
// into another valid plan.
func TestReadLocationRefusals(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "[[machine]]\nsnapshot = \"http://evil/pc1\"\n")
	}))
	t.Cleanup(plain.Close)
	// A plan whose first MiB ends with a complete line: cut there, it is
	// a valid plan whose last entry lost its [machine.match] and so
	// became the default entry for every machine.
	var b strings.Builder
	b.WriteString("[[machine]]\nname = \"pc0\"\nsnapshot = \"media:/snapshots/pc0\"\n[machine.match]\nmac = [\"52:54:00:00:00:01\"]\n")
	for b.Len() < 1<<20-200 {
		b.WriteString("# " + strings.Repeat("x", 60) + "\n")
	}
	tail := "[[machine]]\nname = \"wipe\"\nsnapshot = \"media:/snapshots/wipe\"\n"
	b.WriteString(strings.Repeat("#", 1<<20-b.Len()-len(tail)-1) + "\n" + tail)
	b.WriteString("[machine.match]\nmac = [\"52:54:00:00:00:02\"]\n")
	big := b.String()
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/downgrade/plan.toml":
			http.Redirect(w, r, plain.URL+"/plan.toml", http.StatusFound)
		case "/big/plan.toml":
			io.WriteString(w, big)
		}
	}))
	t.Cleanup(secure.Close)
	roots := x509.NewCertPool()
	roots.AddCert(secure.Certificate())
	for _, tc := range []struct{ path, want string }{
		{"/downgrade/plan.toml", "redirected from https to http"},
		{"/big/plan.toml", "larger than 1048576 bytes"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := &Rescue{netUp: true, roots: roots, client: httpClient(roots)}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			data, err := r.readLocation(ctx, secure.URL+tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("GET %s: got %d bytes, error %v; want an error saying %q", tc.path, len(data), err, tc.want)
			}
		})
	}
	if _, err := ParsePlan([]byte(big[:1<<20])); err != nil {
		t.Errorf("the plan's first MiB should parse (that is the danger), got %v", err)
	}
}

// A plan or install file on the medium that is a FIFO (planted on an ext4
// stick) fails at once, naming it, instead of blocking the rescue.
func TestReadLocationFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "plan.toml")
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	r := &Rescue{}
	done := make(chan error, 1)
	go func() { _, err := r.readLocation(context.Background(), p); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), p) {
			t.Errorf("read %s (a FIFO): got %v, want an error naming it, not a regular file", p, err)
		}
	case <-time.After(time.Minute): // only turns a hang into a failure
		t.Fatalf("read %s (a FIFO): still waiting after a minute", p)
	}
}
