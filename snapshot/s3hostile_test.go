package snapshot

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const hostileSecret = "SUPERSECRETvalue0123456789"

func hostileCred() *S3Credential {
	return &S3Credential{AccessKeyID: "AKIAX", SecretAccessKey: hostileSecret, SessionToken: "TOK" + hostileSecret, Source: "test"}
}

// TestS3RedirectNotFollowed: a store that redirects a signed GET to
// another host gets no second request there (the session token would
// follow), and the redirect is explained as a region or endpoint error.
func TestS3RedirectNotFollowed(t *testing.T) {
	var mu sync.Mutex
	var got http.Header
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
		w.WriteHeader(404)
	}))
	defer other.Close()
	ou, _ := url.Parse(other.URL)
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://localhost:"+ou.Port()+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer store.Close()
	src, err := NewS3Source("s3://bucket/k/snap", S3Options{Endpoint: store.URL, Credential: hostileCred()}, nil, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.ReadFile(context.Background(), ManifestName)
	if err == nil || !strings.Contains(err.Error(), "307") || !strings.Contains(err.Error(), "another region, or the endpoint is wrong") {
		t.Errorf("a redirect: %v; want the 307 explained", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got != nil {
		t.Errorf("the redirect was followed to another host, with X-Amz-Security-Token %q", got.Get("X-Amz-Security-Token"))
	}
}

// TestS3HostileErrorBodies: a store's error code and message are bounded,
// their control characters replaced, and a secret or session token the
// store echoes is masked.
func TestS3HostileErrorBodies(t *testing.T) {
	for name, body := range map[string]func(r *http.Request) string{
		"long code with a newline": func(*http.Request) string {
			return "<Error><Code>" + strings.Repeat("A", 60000) + "\nFAKE: second line</Code><Message>m</Message></Error>"
		},
		"escapes in the message": func(*http.Request) string {
			return "<Error><Code>AccessDenied</Code><Message>&#x9;x&#xA;FAKE: line " + strings.Repeat("B", 5000) + "</Message></Error>"
		},
		"echoed token": func(r *http.Request) string {
			return "<Error><Code>AccessDenied</Code><Message>token " + r.Header.Get("X-Amz-Security-Token") + "</Message></Error>"
		},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(403)
				w.Write([]byte(body(r)))
			}))
			defer srv.Close()
			o := S3Options{Endpoint: srv.URL, Credential: hostileCred()}
			_, err := Open(context.Background(), "s3://bucket/k/snap", OpenOptions{S3: &o, RetryFor: time.Second})
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if len(msg) > 2048 || strings.ContainsAny(msg, "\n\t\x1b") || strings.Contains(msg, hostileSecret) {
				t.Errorf("message of %d bytes, control characters %v, secret %v: %.300q", len(msg), strings.ContainsAny(msg, "\n\t\x1b"), strings.Contains(msg, hostileSecret), msg)
			}
			if !strings.Contains(msg, "403") {
				t.Errorf("message %.200q does not name the 403", msg)
			}
		})
	}
}

// TestS3SecretsNeverPrinted: the credential in fmt, JSON and slog output
// (text and JSON handlers), and a location or endpoint that holds one.
func TestS3SecretsNeverPrinted(t *testing.T) {
	o := S3Options{Credential: hostileCred()}
	j, _ := json.Marshal(o)
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("opts", "s3", o, "cred", o.Credential, "credv", *o.Credential)
	slog.New(slog.NewTextHandler(&b, nil)).Info("opts", "s3", o, "cred", o.Credential, "credv", *o.Credential)
	_, errLoc := ParseS3Location("s3://AKIAX:" + hostileSecret + "@bucket/x")
	_, errEP := S3OptionsFromEnv(func(string) string { return "" }, "http://AKIAX:"+hostileSecret+"@store:7070", "", "")
	for what, s := range map[string]string{
		"fmt":      fmt.Sprintf("%v %+v %#v %v %+v %#v %s %q %x", o, o, o, *o.Credential, *o.Credential, o.Credential, o.Credential, *o.Credential, *o.Credential),
		"json":     string(j),
		"slog":     b.String(),
		"location": fmt.Sprint(errLoc),
		"endpoint": fmt.Sprint(errEP),
	} {
		if strings.Contains(s, hostileSecret) || strings.Contains(s, "<nil>") && (what == "location" || what == "endpoint") {
			t.Errorf("%s: %s", what, s)
		}
	}
}

// TestS3CredentialFileOddities: a duplicate profile, a comment after a
// section header, a comment after a value, a FIFO.
func TestS3CredentialFileOddities(t *testing.T) {
	dir := t.TempDir()
	f := dir + "/c"
	for _, c := range []struct{ name, text, want string }{
		{"duplicate", "[lab]\naws_access_key_id = A1\naws_secret_access_key = S1\n[other]\naws_access_key_id=B\n[lab]\naws_access_key_id = A2\n", "line 6: a second [lab] section"},
		{"header comment", "[lab] # the lab's key\naws_access_key_id = A\naws_secret_access_key = S\n", ""},
		{"value comment", "[lab]\naws_access_key_id = A\naws_secret_access_key = " + hostileSecret + " ; old one\n", "line 3: the value of aws_secret_access_key holds a space"},
	} {
		if err := os.WriteFile(f, []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		cred, err := LoadS3Credential(f, "lab")
		switch {
		case c.want == "" && (err != nil || cred.AccessKeyID != "A"):
			t.Errorf("%s: %v %v", c.name, cred, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), hostileSecret)):
			t.Errorf("%s: %v; want %q without the secret", c.name, err, c.want)
		}
	}
	p := dir + "/fifo"
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := LoadS3Credential(p, "lab"); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("a FIFO: %v; want not a regular file", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("LoadS3Credential waits on a FIFO")
	}
}
