package main

import (
	"bytes"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPutSink: the peer's upload receiver stores what curl -T sends, byte
// for byte, under a plain name only, and refuses anything else without
// writing a file.
func TestPutSink(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewServer(putSink{dir: dir})
	defer srv.Close()
	body := bytes.Repeat([]byte("partclone image "), 100000)
	tests := []struct {
		method, path string
		wantCode     int
		wantFile     string // stored file, or "" when nothing may be stored
	}{
		{http.MethodPut, "/1-ext4.pc.lz4", http.StatusCreated, "1-ext4.pc.lz4"},
		{http.MethodPut, "/sub/x", http.StatusBadRequest, ""},
		{http.MethodPut, "/..%2fescape", http.StatusBadRequest, ""},
		{http.MethodPut, "/.hidden", http.StatusBadRequest, ""},
		{http.MethodPut, "/", http.StatusBadRequest, ""},
		{http.MethodPost, "/post", http.StatusMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			before, _ := os.ReadDir(dir)
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Errorf("%s %s: got status %d, want %d", tt.method, tt.path, resp.StatusCode, tt.wantCode)
			}
			if tt.wantFile == "" {
				after, _ := os.ReadDir(dir)
				if len(after) != len(before) {
					t.Errorf("%s %s: got %d files in %s, want %d (nothing stored)", tt.method, tt.path, len(after), dir, len(before))
				}
				return
			}
			got, err := os.ReadFile(filepath.Join(dir, tt.wantFile))
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			if sha256.Sum256(got) != sha256.Sum256(body) {
				t.Errorf("%s %s: stored %d bytes, want the %d bytes sent", tt.method, tt.path, len(got), len(body))
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".") {
					t.Errorf("%s %s: temporary file %s left in %s", tt.method, tt.path, e.Name(), dir)
				}
			}
		})
	}
}
