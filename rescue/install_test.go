package rescue

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// scriptedAsker answers questions from a list; past its end nobody answers.
type scriptedAsker struct {
	answers []string // "yes", "no" or "" (no answer)
	asked   []string
}

func (s *scriptedAsker) Ask(q string, _ time.Duration) (bool, bool) {
	s.asked = append(s.asked, q)
	if len(s.answers) == 0 {
		return false, false
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	return a == "yes", a != ""
}

func TestParseDest(t *testing.T) {
	tests := []struct {
		in      string
		want    Dest
		wantErr string
	}{
		{"part:2:/lib/modules/extra/raid.ko", Dest{Partition: 2, Path: "lib/modules/extra/raid.ko"}, ""},
		{"label=ROOT:/etc/x.conf", Dest{Label: "ROOT", Path: "etc/x.conf"}, ""},
		{"uuid=1234-ABCD:/EFI/x.efi", Dest{UUID: "1234-ABCD", Path: "EFI/x.efi"}, ""},
		{"part:2:/a/./b//c", Dest{Partition: 2, Path: "a/b/c"}, ""},
		{"part:2:/../etc/passwd", Dest{}, "may not contain .."},
		{"part:2:/a/../../x", Dest{}, "may not contain .."},
		{"part:2:relative", Dest{}, "must start with /"},
		{"part:x:/a", Dest{}, "partition number"},
		{"part:2:/", Dest{}, "root"},
		{"/etc/x", Dest{}, "start with part:N:"},
	}
	for _, tt := range tests {
		got, err := ParseDest(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseDest(%q): got %v, want error with %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseDest(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestInstallFlagSemantics(t *testing.T) {
	const newData, oldData = "new driver", "old driver"
	open := func(string) (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(newData)), nil }
	tests := []struct {
		name       string
		flags      []string
		exists     bool
		answers    []string
		wantResult string
		wantData   string
		wantAsked  int
		wantFailed bool
	}{
		{"new file, no flags", nil, false, nil, InstallCopied, newData, 0, false},
		{"existing, no flags: left alone", nil, true, nil, InstallSkipped, oldData, 0, false},
		{"existing, overwrite", []string{FlagOverwrite}, true, nil, InstallReplaced, newData, 0, false},
		{"existing, prompt_if_exists yes", []string{FlagPromptIfExists}, true, []string{"yes"}, InstallReplaced, newData, 1, false},
		{"existing, prompt_if_exists no", []string{FlagPromptIfExists}, true, []string{"no"}, InstallSkipped, oldData, 1, false},
		{"existing, prompt_if_exists unanswered", []string{FlagPromptIfExists}, true, nil, InstallSkipped, oldData, 1, false},
		{"prompt_always yes, new", []string{FlagPromptAlways}, false, []string{"yes"}, InstallCopied, newData, 1, false},
		{"prompt_always unanswered", []string{FlagPromptAlways}, false, nil, InstallSkipped, "", 1, false},
		{"prompt_always unanswered, required", []string{FlagPromptAlways, FlagRequired}, false, nil, InstallFailed, "", 1, true},
		{"prompt_always ignores overwrite: asks", []string{FlagPromptAlways, FlagOverwrite}, true, []string{"yes", "no"}, InstallSkipped, oldData, 2, false},
		{"required, existing, no overwrite", []string{FlagRequired}, true, nil, InstallFailed, oldData, 0, true},
		{"required, copied", []string{FlagRequired}, false, nil, InstallCopied, newData, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dst := filepath.Join(root, "lib/modules/extra/raid.ko")
			if tt.exists {
				os.MkdirAll(filepath.Dir(dst), 0o755)
				os.WriteFile(dst, []byte(oldData), 0o600)
			}
			ask := &scriptedAsker{answers: tt.answers}
			f := InstallFile{Source: "media:/drivers/raid.ko", MediaLabel: "Vendor driver stick", Dest: "part:2:/lib/modules/extra/raid.ko", Flags: tt.flags, Mode: "0640"}
			out := InstallInto(root, f, open, ask, time.Second)
			if out.Result != tt.wantResult || out.Failed() != tt.wantFailed {
				t.Errorf("result %q (%s), failed=%v; want %q, failed=%v", out.Result, out.Why, out.Failed(), tt.wantResult, tt.wantFailed)
			}
			got, _ := os.ReadFile(dst)
			if string(got) != tt.wantData {
				t.Errorf("file holds %q, want %q", got, tt.wantData)
			}
			if len(ask.asked) != tt.wantAsked {
				t.Errorf("asked %d questions %q, want %d", len(ask.asked), ask.asked, tt.wantAsked)
			}
			if tt.wantAsked > 0 && tt.flags[0] == FlagPromptAlways && !strings.Contains(ask.asked[0], "Vendor driver stick") {
				t.Errorf("the media prompt does not name the media: %q", ask.asked[0])
			}
			if out.Result == InstallCopied || out.Result == InstallReplaced {
				if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o640 {
					t.Errorf("mode %v, want 0640", fi.Mode().Perm())
				}
			}
			if left := tempFiles(t, filepath.Dir(dst)); len(left) > 0 {
				t.Errorf("temporary files left behind: %q", left)
			}
		})
	}
}

func TestInstallConfinedToFileSystem(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	os.Symlink(outside, filepath.Join(root, "escape"))
	os.Symlink("/etc/passwd", filepath.Join(root, "passwd-link"))
	open := func(string) (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("x")), nil }
	for _, dest := range []string{"part:1:/escape/evil", "part:1:/../evil", "part:1:/passwd-link"} {
		out := InstallInto(root, InstallFile{Source: "media:/x", Dest: dest, Flags: []string{FlagOverwrite}}, open, &scriptedAsker{}, time.Second)
		if out.Result != InstallFailed {
			t.Errorf("dest %s: result %q (%s), want failed", dest, out.Result, out.Why)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) > 0 {
		t.Errorf("a file escaped the destination file system: %v", entries[0].Name())
	}
}

func TestInstallSourceMissing(t *testing.T) {
	open := func(string) (io.ReadCloser, error) { return nil, errors.New("no such file on the media") }
	out := InstallInto(t.TempDir(), InstallFile{Source: "media:/x", Dest: "part:1:/x", Flags: []string{FlagRequired}}, open, &scriptedAsker{}, time.Second)
	if !out.Failed() || !strings.Contains(out.Why, "no such file on the media") {
		t.Errorf("got %+v, want a failed required file naming the cause", out)
	}
}

func TestPlanInstallFilesAndDelta(t *testing.T) {
	p, err := ParsePlan([]byte(`
[[machine]]
name = "pc1"
snapshot = "media:/snapshots/pc1"
delta = true
[[machine.install_file]]
source = "media:/drivers/raid.ko"
media_label = "Vendor driver stick"
dest = "part:2:/lib/modules/extra/raid.ko"
vendor = "Vendor Corp"
flags = ["required"]
mode = "0600"
`))
	if err != nil {
		t.Fatal(err)
	}
	m := p.Machines[0]
	if !m.Delta || len(m.InstallFiles) != 1 || m.InstallFiles[0].Dest != "part:2:/lib/modules/extra/raid.ko" || m.InstallFiles[0].Mode != "0600" {
		t.Errorf("plan machine: delta %v, install files %+v", m.Delta, m.InstallFiles)
	}
	_, err = ParsePlan([]byte(`
[[machine]]
snapshot = "media:/snapshots/pc1"
[[machine.install_file]]
source = "media:/x"
dest = "part:1:/x"
flags = ["sometimes"]
`))
	if err == nil || !strings.Contains(err.Error(), "sometimes") {
		t.Errorf("unknown install flag: got %v, want an error naming it", err)
	}
}

// tempFiles lists the install step's temporary files in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if strings.Contains(e.Name(), ".rewind-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// The attack: the restored file system (whatever the snapshot held) has a
// symbolic link where the install step used to put its temporary file,
// pointing at the restored system's /etc/shadow. Installing /etc/motd with
// mode 0644 overwrote shadow's contents and made it world-readable. Now
// the temporary file is new under a random name, and shadow is untouched.
func TestInstallPlantedTempSymlink(t *testing.T) {
	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	os.MkdirAll(etc, 0o755)
	const secret = "root:$6$secret:19000:0:99999:7:::\n"
	shadow := filepath.Join(etc, "shadow")
	if err := os.WriteFile(shadow, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, planted := range []string{"motd.rewind-tmp", ".motd.rewind-tmp"} {
		if err := os.Symlink("shadow", filepath.Join(etc, planted)); err != nil {
			t.Fatal(err)
		}
	}
	const motd = "Welcome to the lab\n"
	open := func(string) (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(motd)), nil }
	out := InstallInto(root, InstallFile{Source: "media:/motd", Dest: "part:2:/etc/motd", Mode: "0644"}, open, &scriptedAsker{}, time.Second)
	if out.Result != InstallCopied {
		t.Fatalf("install /etc/motd: result %q (%s), want copied", out.Result, out.Why)
	}
	got, _ := os.ReadFile(shadow)
	fi, _ := os.Lstat(shadow)
	if string(got) != secret || fi.Mode() != 0o600 {
		t.Errorf("/etc/shadow: got %q mode %v, want %q mode 0600 (the planted symlink was followed)", got, fi.Mode(), secret)
	}
	if got, _ := os.ReadFile(filepath.Join(etc, "motd")); string(got) != motd {
		t.Errorf("/etc/motd: got %q, want %q", got, motd)
	}
	if fi, err := os.Lstat(filepath.Join(etc, "motd")); err != nil {
		t.Errorf("/etc/motd: %v", err)
	} else if fi.Mode() != 0o644 {
		t.Errorf("/etc/motd: got mode %v, want a regular file with mode 0644", fi.Mode())
	}
}

// A source whose sha256 differs from the plan's is not installed: the
// destination keeps its old contents, no temporary file is left, and the
// outcome names both hashes.
func TestInstallSHA256(t *testing.T) {
	const data = "driver v2"
	sum := sha256.Sum256([]byte(data))
	right := hex.EncodeToString(sum[:])
	wrong := strings.Repeat("0", 64)
	open := func(string) (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(data)), nil }
	for _, tc := range []struct {
		name, sha, wantResult, wantData, wantWhy string
	}{
		{"no sha256", "", InstallReplaced, data, ""},
		{"matching sha256", strings.ToUpper(right), InstallReplaced, data, ""},
		{"different sha256", wrong, InstallFailed, "driver v1", "its sha256 is " + right + ", the plan says " + wrong},
	} {
		root := t.TempDir()
		dst := filepath.Join(root, "raid.ko")
		os.WriteFile(dst, []byte("driver v1"), 0o644)
		f := InstallFile{Source: "http://10.0.0.1/raid.ko", Dest: "part:1:/raid.ko", Flags: []string{FlagOverwrite, FlagRequired}, SHA256: tc.sha}
		out := InstallInto(root, f, open, &scriptedAsker{}, time.Second)
		if out.Result != tc.wantResult || !strings.Contains(out.Why, tc.wantWhy) {
			t.Errorf("%s: result %q (%s), want %q with %q", tc.name, out.Result, out.Why, tc.wantResult, tc.wantWhy)
		}
		if got, _ := os.ReadFile(dst); string(got) != tc.wantData {
			t.Errorf("%s: %s holds %q, want %q", tc.name, dst, got, tc.wantData)
		}
		if left := tempFiles(t, root); len(left) > 0 {
			t.Errorf("%s: temporary files left behind: %q", tc.name, left)
		}
	}
}
