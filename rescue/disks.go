package rescue

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Disk is a whole block device the rescue environment can see.
type Disk struct {
	Name      string `json:"name"` // vda, sda, nvme0n1
	Path      string `json:"path"` // /dev/vda
	Size      int64  `json:"size"`
	Model     string `json:"model,omitempty"`
	Serial    string `json:"serial,omitempty"`
	WWN       string `json:"wwn,omitempty"`
	Removable bool   `json:"removable,omitempty"`
	USB       bool   `json:"usb,omitempty"`
	ReadOnly  bool   `json:"read_only,omitempty"`
}

// ListDisks lists whole disks from sysfs (sysRoot is "/sys"), leaving out
// loop, RAM, optical, zram and device-mapper devices.
func ListDisks(sysRoot string) ([]Disk, error) {
	entries, err := os.ReadDir(filepath.Join(sysRoot, "block"))
	if err != nil {
		return nil, err
	}
	var disks []Disk
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "sr") ||
			strings.HasPrefix(n, "zram") || strings.HasPrefix(n, "dm-") || strings.HasPrefix(n, "md") {
			continue
		}
		dir := filepath.Join(sysRoot, "block", n)
		sectors, _ := strconv.ParseInt(readSys(dir, "size"), 10, 64)
		if sectors == 0 {
			continue
		}
		d := Disk{Name: n, Path: "/dev/" + n, Size: sectors * 512}
		d.Model = readSys(dir, "device/model")
		d.Serial = firstNonEmpty(readSys(dir, "device/serial"), readSys(dir, "serial"), readSys(dir, "device/vpd_pg80_serial"))
		d.WWN = firstNonEmpty(readSys(dir, "wwid"), readSys(dir, "device/wwid"))
		d.Removable = readSys(dir, "removable") == "1"
		d.ReadOnly = readSys(dir, "ro") == "1"
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			d.USB = strings.Contains(real, "/usb")
		}
		disks = append(disks, d)
	}
	sort.Slice(disks, func(i, j int) bool { return disks[i].Name < disks[j].Name })
	return disks, nil
}

func readSys(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// TargetSpec is a parsed target= value: comma-separated key=value terms
// that must all hold (size=8GiB, serial=..., wwn=..., model=..., path=/dev/vda).
type TargetSpec struct {
	Size   int64
	Serial string
	WWN    string
	Model  string
	Path   string
}

// ParseTargetSpec parses a target specification. An empty spec is valid:
// it matches any disk, so it only selects when exactly one candidate is left.
func ParseTargetSpec(spec string) (TargetSpec, error) {
	var t TargetSpec
	if strings.TrimSpace(spec) == "" {
		return t, nil
	}
	for _, term := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(term), "=")
		if !ok || v == "" {
			return t, fmt.Errorf("target %q: term %q is not key=value (size=, serial=, wwn=, model=, path=)", spec, term)
		}
		switch k {
		case "size":
			n, err := ParseSize(v)
			if err != nil {
				return t, fmt.Errorf("target %q: %w", spec, err)
			}
			t.Size = n
		case "serial":
			t.Serial = v
		case "wwn":
			t.WWN = v
		case "model":
			t.Model = v
		case "path":
			t.Path = v
		default:
			return t, fmt.Errorf("target %q: unknown key %q (use size=, serial=, wwn=, model=, path=)", spec, k)
		}
	}
	return t, nil
}

// Matches reports whether d fits every term of t.
func (t TargetSpec) Matches(d Disk) bool {
	if t.Size != 0 && d.Size != t.Size {
		return false
	}
	if t.Serial != "" && !strings.EqualFold(t.Serial, d.Serial) {
		return false
	}
	if t.WWN != "" && !strings.EqualFold(strings.TrimPrefix(t.WWN, "0x"), strings.TrimPrefix(strings.TrimPrefix(d.WWN, "naa."), "0x")) && !strings.EqualFold(t.WWN, d.WWN) {
		return false
	}
	if t.Model != "" && !strings.EqualFold(t.Model, d.Model) {
		return false
	}
	if t.Path != "" && t.Path != d.Path && t.Path != d.Name {
		return false
	}
	return true
}

// SelectTarget picks the one disk matching spec. Disks named in exclude
// (the rescue media, by name, with why) and read-only disks are never
// chosen; more than one match is an error, never a guess.
func SelectTarget(disks []Disk, spec string, exclude map[string]string) (Disk, error) {
	t, err := ParseTargetSpec(spec)
	if err != nil {
		return Disk{}, err
	}
	var found []Disk
	var skipped []string
	for _, d := range disks {
		if !t.Matches(d) {
			continue
		}
		if why, ok := exclude[d.Name]; ok {
			skipped = append(skipped, fmt.Sprintf("%s (%s)", d.Path, why))
			continue
		}
		if d.ReadOnly {
			skipped = append(skipped, d.Path+" (read-only)")
			continue
		}
		found = append(found, d)
	}
	desc := spec
	if desc == "" {
		desc = "(any disk)"
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		var have []string
		for _, d := range disks {
			have = append(have, describeTarget(d))
		}
		msg := fmt.Sprintf("no disk matches target %s", desc)
		if len(skipped) > 0 {
			msg += "; excluded: " + strings.Join(skipped, ", ")
		}
		return Disk{}, fmt.Errorf("%s; disks present: [%s]; set target= in the plan or rewind.target= on the kernel command line", msg, strings.Join(have, "; "))
	default:
		var names []string
		for _, d := range found {
			names = append(names, describeTarget(d))
		}
		return Disk{}, fmt.Errorf("target %s is ambiguous: it matches %s; make it precise with serial=, wwn= or path=", desc, strings.Join(names, " and "))
	}
}

// ParseSize parses sizes like 8GiB, 512MiB, 1000000000, 8G (= GiB).
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1},
	}
	mult := int64(1)
	num := s
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q is not a positive number of bytes with an optional unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	return n * mult, nil
}
