package rescue

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Install-file flags, after Windows ASR's [InstallFiles] section.
const (
	FlagPromptAlways   = "prompt_always"    // ask for the named media before copying
	FlagRequired       = "required"         // the recovery fails if the file is not copied
	FlagOverwrite      = "overwrite"        // replace an existing file (ignored with prompt_always)
	FlagPromptIfExists = "prompt_if_exists" // ask before replacing an existing file
)

// InstallFile is one [[machine.install_file]] entry of a plan: a file
// copied into the restored system after the restore.
type InstallFile struct {
	Source     string   `toml:"source" json:"source"`           // media:/path or http(s) URL
	MediaLabel string   `toml:"media_label" json:"media_label"` // named in prompts
	Dest       string   `toml:"dest" json:"dest"`               // part:N:/path, label=L:/path, uuid=U:/path
	Vendor     string   `toml:"vendor" json:"vendor,omitempty"`
	Flags      []string `toml:"flags" json:"flags,omitempty"`
	Mode       string   `toml:"mode" json:"mode,omitempty"` // octal permissions 0000-0777, default 0644
	// SHA256 is the source's expected hash (hex, as sha256sum prints it):
	// a source that differs is not installed. Required for http(s) sources
	// when snapshots must be signed.
	SHA256 string `toml:"sha256" json:"sha256,omitempty"`
}

// Install outcomes.
const (
	InstallCopied   = "copied"
	InstallReplaced = "replaced"
	InstallSkipped  = "skipped"
	InstallFailed   = "failed"
)

// InstallOutcome is one file's line in the report.
type InstallOutcome struct {
	Source   string `json:"source"`
	Dest     string `json:"dest"`
	Result   string `json:"result"`
	Why      string `json:"why,omitempty"`
	Required bool   `json:"required,omitempty"`
}

// Failed reports whether this outcome fails the recovery: a required file
// that was not copied.
func (o InstallOutcome) Failed() bool {
	return o.Required && o.Result != InstallCopied && o.Result != InstallReplaced
}

// Dest is a parsed install destination.
type Dest struct {
	Partition int    // part:N
	Label     string // label=L: file-system or GPT partition label
	UUID      string // uuid=U: file-system UUID or GPT partition GUID
	Path      string // inside the file system, without a leading slash
}

// Validate checks an install_file entry and returns its parsed destination.
func (f *InstallFile) Validate() (Dest, error) {
	if f.Source == "" {
		return Dest{}, errors.New("install_file has no source")
	}
	if !strings.HasPrefix(f.Source, "media:/") && !isHTTP(f.Source) {
		return Dest{}, fmt.Errorf("install_file source %q: use media:/path or an http(s) URL", f.Source)
	}
	for _, fl := range f.Flags {
		switch fl {
		case FlagPromptAlways, FlagRequired, FlagOverwrite, FlagPromptIfExists:
		default:
			return Dest{}, fmt.Errorf("install_file %s: unknown flag %q (use prompt_always, required, overwrite, prompt_if_exists)", f.Source, fl)
		}
	}
	if f.has(FlagOverwrite) && f.has(FlagPromptIfExists) {
		return Dest{}, fmt.Errorf("install_file %s: overwrite and prompt_if_exists contradict each other", f.Source)
	}
	if _, err := f.mode(); err != nil {
		return Dest{}, err
	}
	if f.SHA256 != "" && (len(f.SHA256) != 64 || !hexID.MatchString(f.SHA256)) {
		return Dest{}, fmt.Errorf("install_file %s: sha256 %q is not 64 hex digits (sha256sum FILE prints it)", f.Source, f.SHA256)
	}
	return ParseDest(f.Dest)
}

func (f *InstallFile) has(flag string) bool { return slices.Contains(f.Flags, flag) }

func (f *InstallFile) mode() (fs.FileMode, error) {
	if f.Mode == "" {
		return 0o644, nil
	}
	m, err := strconv.ParseUint(f.Mode, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("install_file %s: mode %q is not an octal permission such as 0644", f.Source, f.Mode)
	}
	if m > 0o777 {
		// Set-ID and sticky bits: a file dropped into a restored system
		// with setuid is a privilege escalation waiting for a typo.
		return 0, fmt.Errorf("install_file %s: mode %s sets the setuid, setgid or sticky bit; Rewind installs permissions 0000-0777 only", f.Source, f.Mode)
	}
	return fs.FileMode(m), nil
}

// ParseDest parses "part:2:/etc/x", "label=ROOT:/etc/x" or "uuid=...:/etc/x".
// The path must be absolute inside the file system and may not climb out
// of it with "..".
func ParseDest(s string) (Dest, error) {
	var d Dest
	var sel, p string
	switch {
	case strings.HasPrefix(s, "part:"):
		var ok bool
		sel, p, ok = strings.Cut(strings.TrimPrefix(s, "part:"), ":")
		n, err := strconv.Atoi(sel)
		if !ok || err != nil || n < 1 {
			return d, fmt.Errorf("install dest %q: want part:N:/path with a partition number N", s)
		}
		d.Partition = n
	case strings.HasPrefix(s, "label="), strings.HasPrefix(s, "uuid="):
		kind, rest, _ := strings.Cut(s, "=")
		var ok bool
		sel, p, ok = strings.Cut(rest, ":")
		if !ok || sel == "" {
			return d, fmt.Errorf("install dest %q: want %s=VALUE:/path", s, kind)
		}
		if kind == "label" {
			d.Label = sel
		} else {
			d.UUID = sel
		}
	default:
		return d, fmt.Errorf("install dest %q: start with part:N:, label=L: or uuid=U:", s)
	}
	if !strings.HasPrefix(p, "/") {
		return d, fmt.Errorf("install dest %q: the path inside the file system must start with /", s)
	}
	for _, elem := range strings.Split(p, "/") {
		if elem == ".." {
			return d, fmt.Errorf("install dest %q: the path may not contain ..", s)
		}
	}
	d.Path = strings.TrimPrefix(path.Clean(p), "/")
	if d.Path == "" || d.Path == "." {
		return d, fmt.Errorf("install dest %q names the file system's root, not a file", s)
	}
	return d, nil
}

// Asker puts a yes/no question to the person at the console. It returns
// answered=false when nobody answers within timeout.
type Asker interface {
	Ask(question string, timeout time.Duration) (yes, answered bool)
}

// InstallInto copies one file into the file system mounted at root, with the
// ASR flag semantics: prompt_always asks for the media first; an existing
// file is replaced with overwrite, after a yes with prompt_if_exists (or
// prompt_always), and otherwise left alone. A question nobody answers within
// timeout takes the safe choice, skip. The destination is confined to root:
// ".." and symbolic links that lead out of it are refused (os.Root).
func InstallInto(root string, f InstallFile, open func(source string) (io.ReadCloser, error), ask Asker, timeout time.Duration) InstallOutcome {
	out := InstallOutcome{Source: f.Source, Dest: f.Dest, Required: f.has(FlagRequired)}
	fail := func(format string, args ...any) InstallOutcome {
		out.Result, out.Why = InstallFailed, fmt.Sprintf(format, args...)
		return out
	}
	skip := func(why string) InstallOutcome {
		out.Result, out.Why = InstallSkipped, why
		if out.Required {
			out.Result, out.Why = InstallFailed, why+" (the file is required)"
		}
		return out
	}
	d, err := f.Validate()
	if err != nil {
		return fail("%v", err)
	}
	mode, _ := f.mode()
	label := f.MediaLabel
	if label == "" {
		label = "the media holding " + f.Source
	}
	if f.has(FlagPromptAlways) {
		q := fmt.Sprintf("Insert %s", label)
		if f.Vendor != "" {
			q += " from " + f.Vendor
		}
		q += fmt.Sprintf(" to install %s into %s. Copy it now?", path.Base(f.Source), f.Dest)
		if yes, answered := ask.Ask(q, timeout); !answered {
			return skip("nobody answered the prompt for " + label)
		} else if !yes {
			return skip("skipped at the prompt")
		}
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return fail("open destination file system: %v", err)
	}
	defer r.Close()
	exists := false
	if fi, err := r.Lstat(d.Path); err == nil {
		if !fi.Mode().IsRegular() {
			return fail("%s exists and is not a regular file", f.Dest)
		}
		exists = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fail("%s: %v", f.Dest, err)
	}
	if exists {
		switch {
		case f.has(FlagOverwrite) && !f.has(FlagPromptAlways):
		case f.has(FlagPromptIfExists) || f.has(FlagPromptAlways):
			yes, answered := ask.Ask(fmt.Sprintf("%s already exists. Replace it with %s?", f.Dest, path.Base(f.Source)), timeout)
			if !answered {
				return skip("exists; nobody answered whether to replace it")
			}
			if !yes {
				return skip("exists; kept at the prompt")
			}
		default:
			return skip("exists; left alone (no overwrite flag)")
		}
	}
	src, err := open(f.Source)
	if err != nil {
		return fail("read %s: %v", f.Source, err)
	}
	defer src.Close()
	if dir := path.Dir(d.Path); dir != "." {
		if err := r.MkdirAll(dir, 0o755); err != nil {
			return fail("create %s: %v", dir, err)
		}
	}
	// Write beside the destination, then rename: a failed copy never
	// leaves half a file in place of a good one. The temporary file is
	// new (O_EXCL) under a random name: a name planted in the restored
	// file system, a symbolic link to its /etc/shadow, is never opened.
	tmp, w, err := createTemp(r, d.Path)
	if err != nil {
		return fail("create %s: %v", f.Dest, err)
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(w, h), src)
	if got := hex.EncodeToString(h.Sum(nil)); err == nil && f.SHA256 != "" && !strings.EqualFold(got, f.SHA256) {
		err = fmt.Errorf("its sha256 is %s, the plan says %s: the source changed or was tampered with; nothing was installed", got, strings.ToLower(f.SHA256))
	}
	if err == nil {
		err = w.Chmod(mode)
	}
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.Rename(tmp, d.Path)
	}
	if err != nil {
		r.Remove(tmp)
		return fail("copy %s to %s: %v", f.Source, f.Dest, err)
	}
	out.Result = InstallCopied
	if exists {
		out.Result = InstallReplaced
	}
	return out
}

// createTemp creates a new file beside name inside r, under a random name,
// readable by its owner only until it is complete.
func createTemp(r *os.Root, name string) (string, *os.File, error) {
	for range 10 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", nil, err
		}
		tmp := path.Join(path.Dir(name), "."+path.Base(name)+".rewind-"+hex.EncodeToString(b[:]))
		w, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return tmp, w, err
	}
	return "", nil, fmt.Errorf("cannot create a temporary file beside %s", name)
}
