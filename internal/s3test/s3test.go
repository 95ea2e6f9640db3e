// Package s3test starts a real S3 server for tests: versitygw, which checks
// V4 signatures, with its posix backend in a test directory, on loopback.
// scripts/setup.sh builds it (go install, pinned) into Binary's directory.
package s3test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Version is the versitygw release the tests use.
const Version = "v1.8.0"

// Binary returns the path of the versitygw binary scripts/setup.sh builds.
func Binary() string {
	if p := os.Getenv("REWIND_VERSITYGW"); p != "" {
		return p
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "rewind-test", "versitygw-"+Version, "versitygw")
}

// Server is a running versitygw.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	Addr     string // 127.0.0.1:PORT
	Access   string
	Secret   string
	Dir      string // the posix backend's root: DIR/BUCKET/KEY
	cmd      *exec.Cmd
}

// Start runs versitygw on a free loopback port until the test ends, with
// a root key pair, and creates the buckets given.
func Start(t testing.TB, buckets ...string) *Server {
	t.Helper()
	bin := Binary()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("versitygw %s is not built (%v): run scripts/setup.sh, which builds it with go install", Version, err)
	}
	s := &Server{Access: "rewindtest", Secret: "rewind-test-secret-0123456789", Dir: filepath.Join(t.TempDir(), "s3")}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	l.Close()
	s.Endpoint = "http://" + s.Addr
	logf, err := os.Create(filepath.Join(filepath.Dir(s.Dir), "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin, "--port", s.Addr, "--access", s.Access, "--secret", s.Secret, "posix", s.Dir)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("versitygw did not listen on %s in 30 s:\n%s", s.Addr, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, b := range buckets {
		if err := s.Client(t).MakeBucket(context.Background(), b, minio.MakeBucketOptions{}); err != nil {
			t.Fatalf("create bucket %s: %v", b, err)
		}
	}
	return s
}

// Client returns a minio client with the root key, path style.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Addr, &minio.Options{Creds: credentials.NewStaticV4(s.Access, s.Secret, ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Env returns the AWS environment that points a rewind process at s.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.Access,
		"AWS_SECRET_ACCESS_KEY=" + s.Secret,
		"AWS_ENDPOINT_URL=" + s.Endpoint,
		"AWS_REGION=us-east-1",
	}
}

// String names the server in messages.
func (s *Server) String() string { return fmt.Sprintf("versitygw %s at %s", Version, s.Endpoint) }
