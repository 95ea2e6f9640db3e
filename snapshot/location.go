package snapshot

import (
	"errors"
	"fmt"
	"strings"
)

// ErrScheme is wrapped by the errors of locations whose scheme Rewind does
// not read or write (s3://, ftp://, a mistyped http:/).
var ErrScheme = errors.New("not a scheme Rewind handles")

// CheckLocation refuses a snapshot location that starts with a URL scheme
// other than http://, https:// or s3:// (an s3:// location must parse, see
// ParseS3Location), so that "s3:lab/pc1" or "ftp://lab/pc1" is never
// taken for a local directory named "s3:lab" or "ftp:". A directory whose name
// starts with something like a scheme is written with ./ before it.
func CheckLocation(loc string) error {
	scheme, ok := locationScheme(loc)
	if !ok {
		return nil
	}
	switch strings.ToLower(scheme) {
	case "s3":
		if _, err := ParseS3Location(loc); err != nil {
			return fmt.Errorf("location %q: %w", loc, err)
		}
		return nil
	case "http", "https":
		if !strings.HasPrefix(strings.ToLower(loc), strings.ToLower(scheme)+"://") {
			return fmt.Errorf("location %q: %s: without // is %w: write %s://HOST/PATH", loc, scheme, ErrScheme, strings.ToLower(scheme))
		}
		return nil
	}
	hint := ""
	if !strings.Contains(loc, "://") {
		hint = "; for a local directory of that name write ./" + loc
	}
	return fmt.Errorf("location %q: %s: is %w (Rewind reads and writes a directory, an http(s):// URL or s3://BUCKET/PREFIX/NAME)%s", loc, scheme, ErrScheme, hint)
}

// locationScheme returns the scheme of loc when it starts with one (RFC
// 3986: a letter, then letters, digits, +, - or ., then a colon, before any
// slash).
func locationScheme(loc string) (string, bool) {
	i := strings.IndexByte(loc, ':')
	if i < 1 || strings.ContainsRune(loc[:i], '/') {
		return "", false
	}
	for j, c := range loc[:i] {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case j > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return "", false
		}
	}
	return loc[:i], true
}
