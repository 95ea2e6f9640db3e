package snapshot

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7/pkg/signer"
)

// MaxPresignExpiry is the longest a Signature V4 pre-signed URL is valid.
const MaxPresignExpiry = 7 * 24 * time.Hour

// MaxPresigned bounds the pre-signed URLs one plan may carry.
const MaxPresigned = 1 << 16

// ErrNoPresigned is wrapped by the error of a read of an object the
// pre-signed URLs do not cover, when there is no credential to sign it.
var ErrNoPresigned = errors.New("no pre-signed URL")

// SnapshotFiles lists the files of the snapshot whose manifest is m: the
// manifest, its signature when signed, and every segment.
func SnapshotFiles(m *Manifest, signed bool) []string {
	names := []string{ManifestName}
	if signed {
		names = append(names, SignatureName)
	}
	for _, s := range m.Segments {
		names = append(names, s.Name)
	}
	return names
}

// PresignS3 returns pre-signed GET URLs for the files names of the
// snapshot at loc, valid for expires (at most MaxPresignExpiry), keyed by
// the object's s3:// location (s3://BUCKET/KEY/NAME). Whoever holds a
// URL may read that object until it expires: no other right is given,
// and no secret is in it.
func PresignS3(loc string, o S3Options, names []string, expires time.Duration) (map[string]string, error) {
	if expires < time.Second || expires > MaxPresignExpiry {
		return nil, fmt.Errorf("pre-signed URLs are valid from 1s to %s (a Signature V4 limit); %s asked", MaxPresignExpiry, expires)
	}
	if o.Credential == nil {
		return nil, errors.New("pre-signing needs a credential (AWS_ACCESS_KEY_ID or a profile) that may read the snapshot")
	}
	l, err := ParseS3Location(loc)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(names))
	for _, name := range names {
		u, err := o.ObjectURL(l, name)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		c := o.Credential
		signed := signer.PreSignV4(*req, c.AccessKeyID, c.SecretAccessKey, c.SessionToken, o.region(), int64(expires/time.Second))
		out[l.String()+"/"+name] = signed.URL.String()
	}
	return out, nil
}

var presignedFile = regexp.MustCompile(`^(manifest\.json|manifest\.json\.sig|data\.[0-9]{3,6})$`)

// CheckPresigned checks pre-signed URLs from an untrusted place (a plan):
// each key an s3:// location of a snapshot file, each URL one with a V4
// query signature for that same object on the store o names (the same
// scheme, host and path as o.ObjectURL), no user or fragment. Errors name
// the key, never a signature.
func CheckPresigned(m map[string]string, o S3Options) error {
	if len(m) > MaxPresigned {
		return fmt.Errorf("%d pre-signed URLs; at most %d", len(m), MaxPresigned)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		dir, name := path.Split(k)
		l, err := ParseS3Location(strings.TrimSuffix(dir, "/"))
		if err != nil || !presignedFile.MatchString(name) {
			return fmt.Errorf("pre-signed URL key %q: want s3://BUCKET/PREFIX/NAME/FILE with FILE manifest.json, manifest.json.sig or data.NNN", k)
		}
		u, err := url.Parse(m[k])
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
			return fmt.Errorf("pre-signed URL for %s: not an http(s) URL without user or fragment", k)
		}
		q := u.Query()
		if q.Get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" || q.Get("X-Amz-Signature") == "" || q.Get("X-Amz-Date") == "" || q.Get("X-Amz-Expires") == "" {
			return fmt.Errorf("pre-signed URL for %s: not a Signature V4 pre-signed URL (no X-Amz-Algorithm, X-Amz-Date, X-Amz-Expires or X-Amz-Signature); make it with rewind s3 presign", k)
		}
		want, err := o.ObjectURL(l, name)
		if err != nil {
			return err
		}
		w, _ := url.Parse(want)
		if u.Scheme != w.Scheme || u.Host != w.Host || u.EscapedPath() != w.EscapedPath() {
			return fmt.Errorf("pre-signed URL for %s is for another object or store (%s://%s%s; the plan's [s3] endpoint gives %s): make the URLs with the endpoint the machines use", k, u.Scheme, u.Host, u.EscapedPath(), want)
		}
	}
	return nil
}

// presignedURL returns the pre-signed URL of file name, if there is one.
func (s *s3Signer) presignedURL(name string) (*url.URL, bool) {
	raw, ok := s.opts.Presigned[s.loc.String()+"/"+name]
	if !ok {
		return nil, false
	}
	u, err := url.Parse(raw)
	return u, err == nil
}

// coveredByPresigned reports whether the pre-signed URLs name any file
// of this location (then every file must have one).
func (s *s3Signer) coveredByPresigned() bool {
	prefix := s.loc.String() + "/"
	for k := range s.opts.Presigned {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// earliestExpiry is when the first pre-signed URL of this location
// expires.
func (s *s3Signer) earliestExpiry() (time.Time, bool) {
	prefix := s.loc.String() + "/"
	var first time.Time
	for k := range s.opts.Presigned {
		if name, ok := strings.CutPrefix(k, prefix); ok && !strings.Contains(name, "/") {
			if t, ok := s.presignedExpiry(name); ok && (first.IsZero() || t.Before(first)) {
				first = t
			}
		}
	}
	return first, !first.IsZero()
}

// presignedExpiry is when the pre-signed URL of name expires.
func (s *s3Signer) presignedExpiry(name string) (time.Time, bool) {
	u, ok := s.presignedURL(name)
	if !ok {
		return time.Time{}, false
	}
	q := u.Query()
	t, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	secs, err2 := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || err2 != nil {
		return time.Time{}, false
	}
	return t.Add(time.Duration(secs) * time.Second), true
}
