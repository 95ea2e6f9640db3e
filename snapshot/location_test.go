package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckLocation(t *testing.T) {
	tests := []struct {
		loc string
		ok  bool
	}{
		{"/mnt/backup/pc1", true},
		{"snap", true},
		{"./s3:lab/pc1", true},
		{"dir/with:colon", true},
		{"http://lab:8080/snapshots/pc1", true},
		{"HTTPS://lab/snapshots/pc1", true},
		{"s3://lab/pc1", true},
		{"s3://lab-1/rooms/a/pc1", true},
		{"s3://lab/", false},
		{"s3://Lab/pc1", false},
		{"s3://lab/../pc1", false},
		{"s3://lab/a//b", false},
		{"s3://lab/pc 1", false},
		{"s3:lab/pc1", false},
		{"S3://lab/pc1", false},
		{"ftp://lab/pc1", false},
		{"media:/snapshots/pc1", false}, // resolved by rescue/ before it gets here
		{"http:/lab/pc1", false},
		{"https:lab", false},
	}
	for _, tt := range tests {
		err := CheckLocation(tt.loc)
		if (err == nil) != tt.ok {
			t.Errorf("CheckLocation(%q) = %v, want ok %v", tt.loc, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrScheme) && !errors.Is(err, ErrS3Location) {
			t.Errorf("CheckLocation(%q) = %v, want it to wrap ErrScheme", tt.loc, err)
		}
	}
}

// TestOpenRefusesUnknownScheme: Open of s3:... does not read a local
// directory named "s3:" even when one exists.
func TestOpenRefusesUnknownScheme(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.MkdirAll(filepath.Join(dir, "s3:lab", "pc1"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, loc := range []string{"ftp://lab/pc1", "s3:lab/pc1"} {
		_, err := Open(context.Background(), loc, OpenOptions{})
		if !errors.Is(err, ErrScheme) && !errors.Is(err, ErrS3Location) {
			t.Errorf("Open(%q) = %v, want an error wrapping ErrScheme or ErrS3Location", loc, err)
		}
	}
}
