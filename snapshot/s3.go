package snapshot

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/minio/minio-go/v7/pkg/signer"
)

// S3Location is a parsed s3://BUCKET/KEY location: the snapshot's files
// are the objects KEY/manifest.json, KEY/data.000 and so on.
type S3Location struct {
	Bucket string
	Key    string // the snapshot's prefix, without a trailing slash
}

func (l S3Location) String() string { return "s3://" + l.Bucket + "/" + l.Key }

// ErrS3Location is wrapped by the errors of malformed s3:// locations.
var ErrS3Location = errors.New("not a valid s3:// location")

// IsS3 reports whether loc is an s3:// location.
func IsS3(loc string) bool { return strings.HasPrefix(strings.ToLower(loc), "s3://") }

// ParseS3Location parses s3://BUCKET/PREFIX/NAME strictly: a bucket name
// as S3 allows it (3 to 63 lower-case letters, digits, dots and hyphens),
// and a key of letters, digits and ._-+=@ in components separated by
// single slashes, none of them . or .. (the key names files, in object
// stores that map keys onto paths too).
func ParseS3Location(loc string) (S3Location, error) {
	if !strings.HasPrefix(loc, "s3://") {
		return S3Location{}, fmt.Errorf("%w: %q does not start with s3:// (lower case)", ErrS3Location, loc)
	}
	rest := strings.TrimSuffix(loc[len("s3://"):], "/")
	bucket, key, _ := strings.Cut(rest, "/")
	if strings.Contains(bucket, "@") || strings.Contains(bucket, ":") {
		// Never echoed: it may be KEY:SECRET@bucket.
		return S3Location{}, fmt.Errorf("%w: an s3:// location holds no user, password or port before the bucket; give the key with AWS_ACCESS_KEY_ID or --s3-profile, the store with --s3-endpoint", ErrS3Location)
	}
	if err := checkBucket(bucket); err != nil {
		return S3Location{}, fmt.Errorf("%w: %q: %v", ErrS3Location, loc, err)
	}
	if key == "" {
		return S3Location{}, fmt.Errorf("%w: %q names a bucket but no snapshot: write s3://%s/PREFIX/NAME", ErrS3Location, loc, bucket)
	}
	if len(key) > 900 {
		return S3Location{}, fmt.Errorf("%w: %q: the key is %d bytes; at most 900", ErrS3Location, loc, len(key))
	}
	for _, c := range strings.Split(key, "/") {
		if c == "" || c == "." || c == ".." {
			return S3Location{}, fmt.Errorf("%w: %q: the key has an empty, . or .. component", ErrS3Location, loc)
		}
		for _, r := range c {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-+=@", r)) {
				return S3Location{}, fmt.Errorf("%w: %q: the key holds %q; use letters, digits and ._-+=@ between slashes", ErrS3Location, loc, r)
			}
		}
	}
	return S3Location{Bucket: bucket, Key: key}, nil
}

func checkBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters", b)
	}
	for i, r := range b {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (r == '-' || r == '.') && i > 0 && i < len(b)-1
		if !ok {
			return fmt.Errorf("bucket name %q may hold only lower-case letters, digits, and . or - inside", b)
		}
	}
	if strings.Contains(b, "..") {
		return fmt.Errorf("bucket name %q holds ..", b)
	}
	return nil
}

// S3Credential is an access key. Source says where it came from, for
// messages; the secret is never printed (String and Format hide it).
type S3Credential struct {
	AccessKeyID     string
	SecretAccessKey string `json:"-"`
	SessionToken    string `json:"-"`
	Source          string // e.g. "AWS_ACCESS_KEY_ID", "profile lab-ro in /root/.aws/credentials"
}

// LogValue hides the secret from slog's handlers (JSON ones too).
func (c S3Credential) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON hides the secret from encoding/json.
func (c S3Credential) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

// String names the key and its source, never the secret.
func (c S3Credential) String() string {
	if c.AccessKeyID == "" {
		return "no credential (anonymous requests)"
	}
	return fmt.Sprintf("access key %s from %s", c.AccessKeyID, c.Source)
}

// GoString hides the secret from %#v too.
func (c S3Credential) GoString() string { return c.String() }

// S3Options says how to reach s3:// locations.
type S3Options struct {
	// Endpoint is the store's URL (http://host:port or https://host);
	// "" means AWS: https://s3.REGION.amazonaws.com.
	Endpoint string
	// Region signs the requests; "" means us-east-1.
	Region string
	// PathStyle puts the bucket in the path (http://host/BUCKET/KEY), as
	// most stores other than AWS want; else it is the host's first label.
	// Nil: path style for an Endpoint, virtual-host style for AWS.
	PathStyle *bool
	// Credential signs the requests; nil means anonymous (a public-read
	// bucket).
	Credential *S3Credential
	// Presigned holds pre-signed GET URLs (rewind s3 presign), keyed by
	// the object's s3:// location; an object found here is read with its
	// URL and no credential. Checked with CheckPresigned.
	Presigned map[string]string
	// PresignedMinLeft is how long pre-signed URLs must stay valid for a
	// source to open: 0 means DefaultPresignedMinLeft, < 0 no check
	// (tests).
	PresignedMinLeft time.Duration
}

// DefaultPresignedMinLeft: pre-signed URLs that expire sooner are refused
// before anything is read (a restore would fail part-way).
const DefaultPresignedMinLeft = 2 * time.Minute

func (o S3Options) region() string {
	if o.Region == "" {
		return "us-east-1"
	}
	return o.Region
}

// endpoint returns the endpoint's URL and whether it is path style.
func (o S3Options) endpoint() (*url.URL, bool, error) {
	ep := o.Endpoint
	path := o.PathStyle == nil || *o.PathStyle
	if ep == "" {
		ep = "https://s3." + o.region() + ".amazonaws.com"
		path = o.PathStyle != nil && *o.PathStyle
	}
	u, err := url.Parse(ep)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
		return nil, false, fmt.Errorf("S3 endpoint %q: give http(s)://HOST[:PORT] with no path, user or query", redactedURL(o.Endpoint))
	}
	u.Path = ""
	return u, path, nil
}

// PlainHTTPWarning is a warning for a credential used over plain http:
// the signatures keep the secret off the wire, but a session token, the
// snapshot's bytes and (for a capture) the whole disk travel in clear
// text, and nothing but a snapshot signature (trusted keys) tells a
// forged answer. "" when the endpoint is https or there is no credential.
func (o S3Options) PlainHTTPWarning() string {
	u, _, err := o.endpoint()
	if err != nil || o.Credential == nil && len(o.Presigned) == 0 {
		return ""
	}
	if u.Scheme != "http" {
		for _, p := range o.Presigned {
			if strings.HasPrefix(p, "http:") {
				return "pre-signed URLs are plain http: the disk's bytes travel unencrypted and unauthenticated; use https, and trusted keys for restores"
			}
		}
		return ""
	}
	return "the S3 endpoint " + u.Host + " is plain http: the disk's bytes (and a session token) travel unencrypted and unauthenticated; use https, and trusted keys for restores"
}

// redactedURL is s with any password in it replaced by xxxxx, for
// messages.
func redactedURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		return "xxxxx" + s[i:]
	}
	return s
}

// ObjectURL returns the URL of the object KEY/name (name "" gives the
// snapshot's prefix with a trailing slash).
func (o S3Options) ObjectURL(l S3Location, name string) (string, error) {
	u, path, err := o.endpoint()
	if err != nil {
		return "", err
	}
	key := l.Key + "/" + name
	if path {
		u.Path = "/" + l.Bucket + "/" + key
	} else {
		u.Host = l.Bucket + "." + u.Host
		u.Path = "/" + key
	}
	return u.String(), nil
}

// Environment variables of the standard AWS set-up that Rewind reads.
const (
	envAccessKey    = "AWS_ACCESS_KEY_ID"
	envSecretKey    = "AWS_SECRET_ACCESS_KEY"
	envSessionToken = "AWS_SESSION_TOKEN"
	envProfile      = "AWS_PROFILE"
	envCredFile     = "AWS_SHARED_CREDENTIALS_FILE"
	envRegion       = "AWS_REGION"
	envDefRegion    = "AWS_DEFAULT_REGION"
	envEndpointS3   = "AWS_ENDPOINT_URL_S3"
	envEndpoint     = "AWS_ENDPOINT_URL"
)

// S3OptionsFromEnv builds the options of a host from the standard AWS
// environment: the key in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and
// AWS_SESSION_TOKEN), else the profile AWS_PROFILE (default "default") of
// the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, default
// ~/.aws/credentials), else none; the region from AWS_REGION or
// AWS_DEFAULT_REGION; the endpoint from AWS_ENDPOINT_URL_S3 or
// AWS_ENDPOINT_URL. The flags given (non-empty) win over the environment.
// Only static keys are read: credential_process and SSO entries are not
// run.
func S3OptionsFromEnv(getenv func(string) string, endpoint, region, profile string) (S3Options, error) {
	o := S3Options{Endpoint: endpoint, Region: region}
	if o.Endpoint == "" {
		o.Endpoint = cmp.Or(getenv(envEndpointS3), getenv(envEndpoint))
	}
	if o.Region == "" {
		o.Region = cmp.Or(getenv(envRegion), getenv(envDefRegion))
	}
	if _, _, err := o.endpoint(); err != nil {
		return o, err
	}
	id, secret := getenv(envAccessKey), getenv(envSecretKey)
	switch {
	case profile == "" && (id != "" || secret != ""):
		if id == "" || secret == "" {
			return o, fmt.Errorf("S3 credential: %s and %s must be set together (one is empty)", envAccessKey, envSecretKey)
		}
		o.Credential = &S3Credential{AccessKeyID: id, SecretAccessKey: secret, SessionToken: getenv(envSessionToken), Source: "the environment (" + envAccessKey + ")"}
		return o, nil
	}
	named := profile != "" || getenv(envProfile) != ""
	file := getenv(envCredFile)
	explicit := file != ""
	if file == "" {
		home := getenv("HOME")
		if home == "" {
			if named {
				return o, fmt.Errorf("S3 credential: a profile is named but there is no credentials file (HOME and %s are unset)", envCredFile)
			}
			return o, nil
		}
		file = filepath.Join(home, ".aws", "credentials")
	}
	named = named || explicit
	if profile == "" {
		profile = cmp.Or(getenv(envProfile), "default")
	}
	c, err := LoadS3Credential(file, profile)
	if errors.Is(err, os.ErrNotExist) && !named {
		return o, nil // no credential at all: anonymous
	}
	if err != nil {
		return o, err
	}
	o.Credential = c
	return o, nil
}

// LoadS3Credential reads profile from an AWS shared credentials file
// (INI: [profile] then aws_access_key_id, aws_secret_access_key and
// optionally aws_session_token). A missing profile or key is an error
// that names the file and the profile, never a secret.
func LoadS3Credential(file, profile string) (*S3Credential, error) {
	f, err := openRegular(file) // never a FIFO or device to wait on
	if err != nil {
		return nil, fmt.Errorf("S3 credential %q: %w", profile, err)
	}
	defer f.Close()
	c := &S3Credential{Source: fmt.Sprintf("profile %s in %s", profile, file)}
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	found, in := false, false
	seen := map[string]bool{}
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			if i := strings.IndexAny(line, "#;"); i > 0 && strings.Contains(line[:i], "]") {
				line = strings.TrimSpace(line[:i]) // [lab] # a comment
			}
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("%s line %d: a section header without ]", file, n)
			}
			name := strings.TrimSpace(line[1 : len(line)-1])
			name = strings.TrimPrefix(name, "profile ")
			in = name == profile
			if in && found {
				return nil, fmt.Errorf("%s line %d: a second [%s] section; keep one", file, n, profile)
			}
			found = found || in
			continue
		}
		if !in {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s line %d: want key = value", file, n)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if v = strings.TrimSpace(v); strings.ContainsAny(v, " \t") && strings.HasPrefix(k, "aws_") {
			return nil, fmt.Errorf("%s line %d: the value of %s holds a space (comments after a value are not allowed)", file, n, k)
		}
		if seen[k] {
			return nil, fmt.Errorf("%s line %d: %s is given twice in [%s]; keep one", file, n, k, profile)
		}
		seen[k] = true
		switch k {
		case "aws_access_key_id":
			c.AccessKeyID = strings.TrimSpace(v)
		case "aws_secret_access_key":
			c.SecretAccessKey = strings.TrimSpace(v)
		case "aws_session_token":
			c.SessionToken = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if !found {
		return nil, fmt.Errorf("S3 credential: %s has no profile [%s]", file, profile)
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return nil, fmt.Errorf("S3 credential: profile [%s] in %s lacks aws_access_key_id or aws_secret_access_key (only static keys are read)", profile, file)
	}
	return c, nil
}

// emptySHA256 is the SHA-256 of no bytes: the payload hash of a GET or HEAD.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// NewS3Source returns a Source for the snapshot at the s3:// location
// loc: an HTTPSource whose every request (each retry too) is signed with
// AWS Signature V4, so that ranged reads resume, retry and detect stalls
// exactly as over http(s). A refusal by the store (a wrong key or
// secret, missing rights, no such bucket, a clock too far off) is
// reported at once with the store's reason, the bucket and the key ID,
// and never retried.
func NewS3Source(loc string, o S3Options, client *http.Client, retryFor time.Duration, log func(string, ...any)) (*HTTPSource, error) {
	l, err := ParseS3Location(loc)
	if err != nil {
		return nil, err
	}
	base, err := o.ObjectURL(l, "")
	if err != nil {
		return nil, err
	}
	sig := &s3Signer{loc: l, opts: o}
	if exp, ok := sig.earliestExpiry(); ok {
		if time.Now().After(exp) {
			return nil, &S3Error{Code: "PresignedURLsExpired", What: "read " + l.String(),
				Advice: fmt.Sprintf("the plan's pre-signed URLs for it expired at %s: make new ones with rewind s3 presign (nothing was written)", exp.UTC().Format(time.RFC3339))}
		}
		min := o.PresignedMinLeft
		if min == 0 {
			min = DefaultPresignedMinLeft
		}
		if left := time.Until(exp); min > 0 && left < min {
			return nil, &S3Error{Code: "PresignedURLsExpireSoon", What: "read " + l.String(),
				Advice: fmt.Sprintf("the plan's pre-signed URLs for it expire at %s, in %s: too soon for a restore; make new ones with rewind s3 presign (nothing was written)", exp.UTC().Format(time.RFC3339), left.Round(time.Second))}
		}
		if log != nil {
			log("reading with pre-signed URLs", "location", l.String(), "valid until", exp.UTC().Format(time.RFC3339))
		}
	}
	h := NewHTTPSource(base, client, retryFor, log)
	// Object stores' redirects (another region) are answers, not
	// directions: following one would send the signed headers (the
	// session token) to another host, or read it anonymously.
	c := *h.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	h.client = &c
	h.raw = l.String()
	h.s3 = sig
	return h, nil
}

// s3Signer signs an HTTPSource's requests and explains the store's errors.
type s3Signer struct {
	loc  S3Location
	opts S3Options
}

// sign signs req for file name: with its pre-signed URL when there is
// one, else with the credential. Without either, a source given
// pre-signed URLs refuses the file (the signature file counts as absent:
// Open then treats the snapshot as unsigned, which trusted keys refuse).
func (s *s3Signer) sign(req *http.Request, name string) (*http.Request, error) {
	if u, ok := s.presignedURL(name); ok {
		req.URL, req.Host = u, u.Host
		return req, nil
	}
	c := s.opts.Credential
	if c == nil && s.coveredByPresigned() {
		if name == SignatureName {
			return nil, fs.ErrNotExist
		}
		return nil, &S3Error{Status: 0, Code: "NoPresignedURL", What: req.Method + " " + s.loc.String() + "/" + name,
			Advice: "the plan's pre-signed URLs do not cover this file and there is no credential: make them again with rewind s3 presign " + s.loc.String()}
	}
	req.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	if c == nil {
		return req, nil
	}
	return signer.SignV4(*req, c.AccessKeyID, c.SecretAccessKey, c.SessionToken, s.opts.region()), nil
}

// S3Error is a refusal by an object store, with the code and message of
// its XML error body.
type S3Error struct {
	Status  int
	Code    string // e.g. SignatureDoesNotMatch, AccessDenied, NoSuchBucket
	Message string
	What    string // the request: "GET s3://b/k/manifest.json"
	Advice  string
}

func (e *S3Error) Error() string {
	s := fmt.Sprintf("%s: the store answered %d %s", e.What, e.Status, e.Code)
	if e.Status == 0 { // refused before asking the store
		s = e.What + ": " + e.Code
	}
	if e.Message != "" {
		s += " (" + e.Message + ")"
	}
	if e.Advice != "" {
		s += ": " + e.Advice
	}
	return s
}

// explain reads the error body of resp (at most 64 KiB) and returns the
// S3Error for it, or nil for a 404 NoSuchKey (the object is absent) and
// for statuses worth retrying (5xx, 429), which the caller handles.
func (s *s3Signer) explain(method, name string, resp *http.Response) error {
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		return nil
	}
	var body struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = xml.NewDecoder(bytes.NewReader(data)).Decode(&body)
	if resp.StatusCode == http.StatusNotFound && (body.Code == "NoSuchKey" || body.Code == "" && method == http.MethodHead) {
		return nil
	}
	if resp.StatusCode == http.StatusPreconditionFailed {
		return nil // If-Match failed: the object was replaced (the caller says so)
	}
	if _, presigned := s.presignedURL(name); name == SignatureName && !presigned && resp.StatusCode == http.StatusForbidden && body.Code == "AccessDenied" {
		// AWS answers 403 for a missing object to a key without
		// s3:ListBucket; the manifest was readable, so this is most
		// likely an unsigned snapshot. Trusted keys still refuse it.
		return fs.ErrNotExist
	}
	return s.refusal(method, name, resp.StatusCode, body.Code, body.Message, resp.Header.Get("Date"))
}

// refusal builds the S3Error for a store's answer, with advice for the
// codes a lab meets (never a secret).
func (s *s3Signer) refusal(method, name string, status int, code, message, date string) *S3Error {
	code, message = s.clean(code, 64), s.clean(message, 300)
	e := &S3Error{Status: status, Code: code, Message: message, What: method + " " + s.loc.String() + "/" + name}
	if e.Code == "" {
		e.Code = http.StatusText(status)
	}
	cred := s.opts.Credential.describe()
	verb := "read"
	if method == http.MethodPut || method == http.MethodPost {
		verb = "write"
	}
	exp, presigned := s.presignedExpiry(name)
	switch {
	case presigned && (status == http.StatusForbidden || code == "AccessDenied" || code == "SignatureDoesNotMatch"):
		if time.Now().After(exp) {
			e.Advice = fmt.Sprintf("the plan's pre-signed URL for %s expired at %s: make new ones with rewind s3 presign", name, exp.UTC().Format(time.RFC3339))
		} else {
			e.Advice = fmt.Sprintf("the store refused the plan's pre-signed URL for %s (valid until %s): it was made with a key the store does not accept now, for another store, or was altered; make new ones with rewind s3 presign", name, exp.UTC().Format(time.RFC3339))
		}
	case code == "SignatureDoesNotMatch":
		e.Advice = "the secret key does not belong to " + cred + "; fix the secret (it is never printed)"
	case code == "InvalidAccessKeyId" || code == "XAdminUserNotFound": // versitygw's code
		e.Advice = "the store does not know " + cred + "; check the key ID and the endpoint"
	case code == "RequestTimeTooSkewed":
		e.Advice = fmt.Sprintf("this machine's clock (%s) is too far from the store's (%s): set the clock (signatures are valid for 15 minutes)", time.Now().UTC().Format(time.RFC3339), date)
	case code == "NoSuchBucket":
		e.Advice = fmt.Sprintf("there is no bucket %s on %s; check the bucket name and the endpoint", s.loc.Bucket, s.endpointName())
	case status == http.StatusMovedPermanently || status == http.StatusTemporaryRedirect || status == http.StatusFound ||
		code == "PermanentRedirect" || code == "TemporaryRedirect" || code == "AuthorizationHeaderMalformed":
		e.Advice = "the bucket is in another region, or the endpoint is wrong: give the bucket's region (--s3-region, AWS_REGION) and endpoint"
	case status == http.StatusForbidden:
		e.Advice = fmt.Sprintf("%s may not %s objects under %s (or the object is missing: without s3:ListBucket a store answers 403 for it); give it the rights (s3:GetObject and s3:ListBucket to read; also s3:PutObject, s3:ListBucketMultipartUploads, s3:ListMultipartUploadParts and s3:DeleteObject to capture)", cred, verb, s.loc)
	}
	return e
}

// amzSecret matches the bearer parts of a request a store may echo: a
// pre-signed URL's signature, credential and token, an Authorization
// header's signature.
var amzSecret = regexp.MustCompile(`(?i)(X-Amz-(?:Signature|Security-Token|Credential)=|Signature=)[^&\s"'<>,]*`)

// clean makes store-controlled text fit for a message: control
// characters become spaces, the credential's secret and session token
// (a store may echo them) become xxxxx, and at most max bytes are kept.
func (s *s3Signer) clean(text string, max int) string {
	if c := s.opts.Credential; c != nil {
		for _, secret := range []string{c.SecretAccessKey, c.SessionToken} {
			if len(secret) >= 8 {
				text = strings.ReplaceAll(text, secret, "xxxxx")
			}
		}
	}
	text = amzSecret.ReplaceAllString(text, "${1}xxxxx")
	text = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return ' '
		}
		return r
	}, text)
	if len(text) > max {
		text = strings.ToValidUTF8(text[:max], "") + "..."
	}
	return text
}

func (c *S3Credential) describe() string {
	if c == nil {
		return "an anonymous request (no credential)"
	}
	return c.String()
}

func (s *s3Signer) endpointName() string {
	if u, _, err := s.opts.endpoint(); err == nil {
		return u.Host
	}
	return s.opts.Endpoint
}
