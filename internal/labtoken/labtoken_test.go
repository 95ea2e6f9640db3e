package labtoken

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		tok, want string // want "" = accepted
	}{
		{strings.Repeat("a", Min), ""},
		{strings.Repeat("Z9-._~+/=", 4), ""},
		{strings.Repeat("a", Min-1), "is 15 characters"},
		{strings.Repeat("a", Max+1), "is 1025 characters"},
		{strings.Repeat("a", 20) + " b", "at position 21"},
		{strings.Repeat("a", 20) + "\"", "at position 21"},
	} {
		err := Check("report token", tc.tok)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Check(%.20q...): got %v, want accepted", tc.tok, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "report token")):
			t.Errorf("Check(%.20q...): got %v, want an error naming the report token and %q", tc.tok, err, tc.want)
		case err != nil && strings.Contains(err.Error(), tc.tok):
			t.Errorf("Check: the error shows the token: %v", err)
		}
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("  "+strings.Repeat("f", 64)+"\n"), 0o600)
	if tok, err := Read("upload token", good); err != nil || tok != strings.Repeat("f", 64) {
		t.Errorf("Read(good): got %q, %v; want the token without white space", tok, err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("short\n"), 0o600)
	if _, err := Read("upload token", bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Read(bad): got %v, want an error naming the file", err)
	}
	if _, err := Read("upload token", filepath.Join(dir, "absent")); err == nil || !strings.Contains(err.Error(), "openssl rand") {
		t.Errorf("Read(absent): got %v, want an error saying how to make one", err)
	}
}
