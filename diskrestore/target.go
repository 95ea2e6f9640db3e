package diskrestore

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rewind-bmr/rewind/internal/units"
)

// Spec chooses a restore target. Every field set must match.
type Spec struct {
	Path    string // /dev/sda, or a symlink to it such as /dev/disk/by-id/...
	Serial  string // exact, case-insensitive
	WWN     string // case-insensitive; "naa."/"eui."/"0x" prefixes ignored
	MinSize int64  // bytes; 0: no lower bound
	MaxSize int64  // bytes; 0: no upper bound
	text    string
}

// sizeTolerance widens a single "size=X" into X-2%..X+2%: disks sold as
// the same size differ by a few megabytes, and "8GiB" should find the
// 8,000,000,000-byte stick and the 8 GiB virtual disk alike.
const sizeTolerance = 0.02

// ParseSpec parses a target spec: comma-separated terms, each one of
//
//	/dev/vda or path=/dev/vda   the device (symlinks are resolved)
//	serial=S                    the disk's serial number
//	wwn=W                       the disk's World Wide Name
//	size=8GiB                   within 2% of 8 GiB
//	size=7GiB-9GiB              a size range, either end optional
//
// Sizes take B, K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024) or KB, MB, GB,
// TB (powers of 1000).
func ParseSpec(s string) (Spec, error) {
	spec := Spec{text: s}
	if strings.TrimSpace(s) == "" {
		return spec, fmt.Errorf("empty target spec: give a device path, serial=, wwn= or size=")
	}
	for _, term := range strings.Split(s, ",") {
		term = strings.TrimSpace(term)
		key, val, ok := strings.Cut(term, "=")
		if !ok {
			key, val = "path", term
		}
		switch strings.ToLower(key) {
		case "path", "dev", "device":
			if !strings.HasPrefix(val, "/") {
				val = "/dev/" + val
			}
			spec.Path = val
		case "serial":
			spec.Serial = val
		case "wwn":
			spec.WWN = val
		case "size":
			lo, hi, err := parseSizeRange(val)
			if err != nil {
				return spec, fmt.Errorf("target spec %q: %w", s, err)
			}
			spec.MinSize, spec.MaxSize = lo, hi
		default:
			return spec, fmt.Errorf("target spec %q: unknown term %q (want path=, serial=, wwn= or size=)", s, term)
		}
		if val == "" {
			return spec, fmt.Errorf("target spec %q: %s= needs a value", s, key)
		}
	}
	return spec, nil
}

// String returns the spec as the user wrote it.
func (s Spec) String() string { return s.text }

func parseSizeRange(v string) (lo, hi int64, err error) {
	if a, b, ok := strings.Cut(v, "-"); ok {
		if a != "" {
			if lo, err = units.ParseSize(a); err != nil {
				return 0, 0, err
			}
		}
		if b != "" {
			if hi, err = units.ParseSize(b); err != nil {
				return 0, 0, err
			}
		}
		if a == "" && b == "" || hi != 0 && hi < lo {
			return 0, 0, fmt.Errorf("size range %q is empty", v)
		}
		return lo, hi, nil
	}
	n, err := units.ParseSize(v)
	if err != nil {
		return 0, 0, err
	}
	return int64(float64(n) * (1 - sizeTolerance)), int64(float64(n) * (1 + sizeTolerance)), nil
}

// Matches reports whether d fits every term of the spec.
func (s Spec) Matches(d Disk) bool {
	if s.Path != "" && s.Path != d.Path {
		r, err := filepath.EvalSymlinks(s.Path)
		if err != nil || r != d.Path {
			return false
		}
	}
	if s.Serial != "" && !strings.EqualFold(s.Serial, d.Serial) {
		return false
	}
	if s.WWN != "" && (d.WWN == "" || !strings.EqualFold(bareWWN(s.WWN), bareWWN(d.WWN))) {
		return false
	}
	if s.MinSize > 0 && d.Size < s.MinSize || s.MaxSize > 0 && d.Size > s.MaxSize {
		return false
	}
	return true
}

func bareWWN(w string) string {
	w = strings.ToLower(strings.TrimSpace(w))
	for _, p := range []string{"naa.", "eui.", "t10.", "0x"} {
		w = strings.TrimPrefix(w, p)
	}
	return w
}

// Excluded reports whether d is the rescue medium (as ListDisks marked it)
// or one of the paths in exclude (the disk or one of its partitions).
func Excluded(d Disk, exclude []string) bool {
	if d.Rescue {
		return true
	}
	for _, x := range exclude {
		if x == d.Path || slices.Contains(d.Partitions, x) {
			return true
		}
	}
	return false
}

// Refusal returns why d must never be a restore target, or "". exclude
// lists paths (disks or partitions) to refuse besides those ListDisks
// marked as rescue media.
func Refusal(d Disk, exclude []string) string {
	switch {
	case Excluded(d, exclude):
		return "it is the rescue media or holds the snapshot"
	case d.System:
		return "it holds the running system"
	case d.Mounted:
		return "it is mounted (" + strings.Join(d.Mounts, ", ") + "); unmount it first"
	case len(d.Holders) > 0:
		return "it is in use by " + strings.Join(d.Holders, ", ") + "; stop them first"
	case d.ReadOnly:
		return "it is read-only"
	}
	return ""
}

// SelectTarget picks the one disk that spec matches and that may be
// written: never a mounted disk, one holding the running system, the
// rescue media, the snapshot's source (exclude), or a read-only one. A
// spec that matches two or more writable disks is refused, listing them;
// so is a spec matching none, listing the disks there are.
func SelectTarget(disks []Disk, spec Spec, exclude []string) (Disk, error) {
	var usable, refused []string
	var pick []Disk
	for _, d := range disks {
		if !spec.Matches(d) {
			continue
		}
		if why := Refusal(d, exclude); why != "" {
			refused = append(refused, DescribeDisk(d)+": "+why)
			continue
		}
		pick = append(pick, d)
		usable = append(usable, DescribeDisk(d))
	}
	switch {
	case len(pick) == 1:
		return pick[0], nil
	case len(pick) > 1:
		return Disk{}, fmt.Errorf("target spec %q matches %d disks, and Rewind will not guess which to overwrite:\n  %s\nmake the spec precise with path=, serial= or wwn=",
			spec.text, len(pick), strings.Join(usable, "\n  "))
	case len(refused) > 0:
		return Disk{}, fmt.Errorf("target spec %q matches no disk that may be overwritten:\n  %s", spec.text, strings.Join(refused, "\n  "))
	}
	var all []string
	for _, d := range disks {
		all = append(all, DescribeDisk(d))
	}
	if len(all) == 0 {
		all = []string{"(no disks found: is the disk's driver loaded?)"}
	}
	return Disk{}, fmt.Errorf("target spec %q matches no disk; the disks here are:\n  %s", spec.text, strings.Join(all, "\n  "))
}

// DescribeDisk is a one-line description of d for messages and listings.
func DescribeDisk(d Disk) string {
	parts := []string{units.Bytes(d.Size)}
	if d.Transport != "" {
		parts = append(parts, d.Transport)
	}
	if d.Model != "" {
		parts = append(parts, "model "+d.Model)
	}
	if d.Serial != "" {
		parts = append(parts, "serial "+d.Serial)
	}
	if d.WWN != "" {
		parts = append(parts, "wwn "+d.WWN)
	}
	return d.Path + " (" + strings.Join(parts, ", ") + ")"
}
