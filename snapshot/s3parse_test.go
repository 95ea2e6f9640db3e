package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseS3Location: locations a user writes are parsed into bucket and
// key; malformed or dangerous ones are refused with ErrS3Location and a
// message naming the problem.
func TestParseS3Location(t *testing.T) {
	for _, c := range []struct {
		loc, bucket, key string
		want             string // substring of the error; "" = accepted
	}{
		{loc: "s3://lab/pc1", bucket: "lab", key: "pc1"},
		{loc: "s3://lab-1.rooms/room2/pc-7_a+b=c@d/", bucket: "lab-1.rooms", key: "room2/pc-7_a+b=c@d"},
		{loc: "S3://lab/pc1", want: "lower case"},
		{loc: "s3:lab/pc1", want: "does not start with s3://"},
		{loc: "s3://lab", want: "names a bucket but no snapshot"},
		{loc: "s3://lab/", want: "names a bucket but no snapshot"},
		{loc: "s3://ab/pc1", want: "3 to 63"},
		{loc: "s3://" + strings.Repeat("a", 64) + "/pc1", want: "3 to 63"},
		{loc: "s3://Lab/pc1", want: "lower-case"},
		{loc: "s3://-lab/pc1", want: "inside"},
		{loc: "s3://lab-/pc1", want: "inside"},
		{loc: "s3://la..b/pc1", want: "holds .."},
		{loc: "s3://key:secret@lab/pc1", want: "holds no user, password or port"},
		{loc: "s3://lab:9000/pc1", want: "holds no user, password or port"},
		{loc: "s3://lab/a//b", want: "empty, . or .."},
		{loc: "s3://lab/../etc", want: "empty, . or .."},
		{loc: "s3://lab/a/./b", want: "empty, . or .."},
		{loc: "s3://lab/pc1?versionId=1", want: `holds '?'`},
		{loc: "s3://lab/pc%2F1", want: `holds '%'`},
		{loc: "s3://lab/pc 1", want: `holds ' '`},
		{loc: "s3://lab/pé", want: `holds 'é'`},
		{loc: "s3://lab/a\\b", want: `holds '\\'`},
		{loc: "s3://lab/" + strings.Repeat("a", 901), want: "at most 900"},
	} {
		t.Run(c.loc[:min(len(c.loc), 40)], func(t *testing.T) {
			l, err := ParseS3Location(c.loc)
			if c.want == "" {
				if err != nil {
					t.Fatalf("ParseS3Location(%q): %v", c.loc, err)
				}
				if l.Bucket != c.bucket || l.Key != c.key {
					t.Fatalf("ParseS3Location(%q) = %q %q, want %q %q", c.loc, l.Bucket, l.Key, c.bucket, c.key)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrS3Location) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParseS3Location(%q) = %v; want ErrS3Location naming %q", c.loc, err, c.want)
			}
		})
	}
}

// TestS3ObjectURL: path style for an endpoint, virtual-host style for AWS;
// endpoints with a user, a path or a query, or another scheme, refused.
func TestS3ObjectURL(t *testing.T) {
	on, off := true, false
	l := S3Location{Bucket: "lab", Key: "room/pc1"}
	for _, c := range []struct {
		o    S3Options
		want string
	}{
		{S3Options{}, "https://lab.s3.us-east-1.amazonaws.com/room/pc1/manifest.json"},
		{S3Options{Region: "eu-west-3"}, "https://lab.s3.eu-west-3.amazonaws.com/room/pc1/manifest.json"},
		{S3Options{PathStyle: &on}, "https://s3.us-east-1.amazonaws.com/lab/room/pc1/manifest.json"},
		{S3Options{Endpoint: "http://10.0.0.5:7070"}, "http://10.0.0.5:7070/lab/room/pc1/manifest.json"},
		{S3Options{Endpoint: "https://store.lab/", PathStyle: &off}, "https://lab.store.lab/room/pc1/manifest.json"},
		{S3Options{Endpoint: "http://user:pw@store"}, "error"},
		{S3Options{Endpoint: "http://store/bucket"}, "error"},
		{S3Options{Endpoint: "http://store/?x=1"}, "error"},
		{S3Options{Endpoint: "file:///etc"}, "error"},
		{S3Options{Endpoint: "store:9000"}, "error"},
	} {
		got, err := c.o.ObjectURL(l, "manifest.json")
		if c.want == "error" {
			if err == nil || !strings.Contains(err.Error(), "S3 endpoint") {
				t.Errorf("ObjectURL with endpoint %q = %q, %v; want an error naming the endpoint", c.o.Endpoint, got, err)
			}
			if c.o.Endpoint != "" && strings.Contains(fmt.Sprint(err), "pw@") {
				t.Errorf("error shows the endpoint's password: %v", err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ObjectURL(%+v) = %q, %v; want %q", c.o, got, err, c.want)
		}
	}
}

func writeCreds(t *testing.T, text string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestLoadS3Credential: static keys of the named profile are read; a
// missing profile, a missing key, a malformed line are errors naming the
// file and profile and never the secret; credential_process is not run.
func TestLoadS3Credential(t *testing.T) {
	const file = `# lab keys
[default]
aws_access_key_id = AKDEFAULT
aws_secret_access_key = defaultsecret

[profile lab-ro]
aws_access_key_id=AKLABRO
aws_secret_access_key=labrosecret
aws_session_token = tok

[proc]
credential_process = /bin/sh -c 'touch /tmp/rewind-credential-process-ran'

[half]
aws_access_key_id = AKHALF
`
	f := writeCreds(t, file)
	for _, c := range []struct {
		profile, id, token, want string
	}{
		{profile: "default", id: "AKDEFAULT"},
		{profile: "lab-ro", id: "AKLABRO", token: "tok"},
		{profile: "nosuch", want: "has no profile [nosuch]"},
		{profile: "proc", want: "only static keys"},
		{profile: "half", want: "lacks aws_access_key_id or aws_secret_access_key"},
	} {
		c2, err := LoadS3Credential(f, c.profile)
		if c.want != "" {
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("profile %s: %v; want an error naming %q", c.profile, err, c.want)
			}
			continue
		}
		if err != nil {
			t.Fatalf("profile %s: %v", c.profile, err)
		}
		if c2.AccessKeyID != c.id || c2.SessionToken != c.token || !strings.Contains(c2.Source, c.profile) {
			t.Errorf("profile %s: got %q token %q source %q", c.profile, c2.AccessKeyID, c2.SessionToken, c2.Source)
		}
		for _, s := range []string{c2.String(), fmt.Sprintf("%v %+v %#v %s", *c2, *c2, *c2, c2)} {
			if strings.Contains(s, "secret") {
				t.Errorf("the credential prints its secret: %s", s)
			}
		}
	}
	if _, err := os.Stat("/tmp/rewind-credential-process-ran"); err == nil {
		t.Fatal("credential_process was run")
	}
	bad := writeCreds(t, "[default\naws_access_key_id = A\n")
	if _, err := LoadS3Credential(bad, "default"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("an unclosed section header: %v; want an error naming line 1", err)
	}
	bad = writeCreds(t, "[default]\naws_secret_access_key sekrit\n")
	if _, err := LoadS3Credential(bad, "default"); err == nil || !strings.Contains(err.Error(), "line 2") || strings.Contains(err.Error(), "sekrit") {
		t.Errorf("a line without =: %v; want an error naming line 2, not the line's text", err)
	}
}

// TestS3OptionsFromEnv: the standard AWS variables, flags winning over
// them, profiles, and a half-set key refused.
func TestS3OptionsFromEnv(t *testing.T) {
	creds := writeCreds(t, "[default]\naws_access_key_id = AKFILE\naws_secret_access_key = filesecret\n[lab]\naws_access_key_id = AKLAB\naws_secret_access_key = labsecret\n")
	home := t.TempDir()
	for _, c := range []struct {
		name                       string
		env                        map[string]string
		endpoint, region, prof     string
		wantEP, wantRegion, wantID string
		wantErr                    string
	}{
		{name: "keys", env: map[string]string{"AWS_ACCESS_KEY_ID": "AKENV", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_S3": "http://s3.lab:9000"},
			wantEP: "http://s3.lab:9000", wantRegion: "eu-west-1", wantID: "AKENV"},
		{name: "flags win", env: map[string]string{"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://a:1"}, endpoint: "http://b:2", region: "us-west-2",
			wantEP: "http://b:2", wantRegion: "us-west-2"},
		{name: "half key", env: map[string]string{"AWS_ACCESS_KEY_ID": "AKENV"}, wantErr: "must be set together"},
		{name: "default profile", env: map[string]string{"AWS_SHARED_CREDENTIALS_FILE": creds}, wantID: "AKFILE"},
		{name: "AWS_PROFILE", env: map[string]string{"AWS_SHARED_CREDENTIALS_FILE": creds, "AWS_PROFILE": "lab"}, wantID: "AKLAB"},
		{name: "flag profile over keys", env: map[string]string{"AWS_SHARED_CREDENTIALS_FILE": creds, "AWS_ACCESS_KEY_ID": "AKENV", "AWS_SECRET_ACCESS_KEY": "s"}, prof: "lab", wantID: "AKLAB"},
		{name: "named profile missing file", env: map[string]string{"HOME": home}, prof: "lab", wantErr: "no such file"},
		{name: "anonymous", env: map[string]string{"HOME": home}},
		{name: "profile without HOME", prof: "lab", wantErr: "no credentials file"},
		{name: "missing AWS_SHARED_CREDENTIALS_FILE", env: map[string]string{"AWS_SHARED_CREDENTIALS_FILE": home + "/nosuch"}, wantErr: "no such file"},
		{name: "bad endpoint", env: map[string]string{"AWS_ENDPOINT_URL": "ftp://x"}, wantErr: "S3 endpoint"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := S3OptionsFromEnv(func(k string) string { return c.env[k] }, c.endpoint, c.region, c.prof)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v; want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			id := ""
			if o.Credential != nil {
				id = o.Credential.AccessKeyID
			}
			if o.Endpoint != c.wantEP || o.Region != c.wantRegion || id != c.wantID {
				t.Fatalf("got endpoint %q region %q key %q; want %q %q %q", o.Endpoint, o.Region, id, c.wantEP, c.wantRegion, c.wantID)
			}
			if s := fmt.Sprintf("%v %+v %#v", o, o, o); strings.Contains(s, "secret") {
				t.Fatalf("the options print a secret: %s", s)
			}
		})
	}
}
