// Package labtoken checks and reads the lab's secrets that rescue
// environments send as bearer tokens: the report token and the upload
// token ('rewind serve --report-token', '--upload-token').
package labtoken

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// Bounds of a token's length, in characters.
const (
	Min = 16
	Max = 1024
)

// Check accepts a token of Min to Max characters from letters, digits
// and -._~+/= (what 'openssl rand -hex 32' or base64 make, and what an
// HTTP header carries unchanged). what names it in errors ("report token").
func Check(what, tok string) error {
	if len(tok) < Min || len(tok) > Max {
		return fmt.Errorf("%s is %d characters; use %d to %d (make one with: openssl rand -hex 32)", what, len(tok), Min, Max)
	}
	for i, c := range []byte(tok) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/=", c) >= 0) {
			return fmt.Errorf("%s has a character other than letters, digits and -._~+/= at position %d (make one with: openssl rand -hex 32)", what, i+1)
		}
	}
	return nil
}

// Read reads a token from a file, surrounding white space ignored, and
// checks it.
func Read(what, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s file: %w; create one with: openssl rand -hex 32 > %s", what, err, path)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, Max+64))
	if err != nil {
		return "", fmt.Errorf("%s file %s: %w", what, path, err)
	}
	tok := strings.TrimSpace(string(b))
	if err := Check(what, tok); err != nil {
		return "", fmt.Errorf("%s file %s: %w", what, path, err)
	}
	return tok, nil
}
