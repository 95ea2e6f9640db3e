package rescue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rewind-bmr/rewind/diskrestore"
)

// MediaLabel is the file-system label of Rewind's rescue media.
const MediaLabel = "REWIND"

// MediaMount is where the rescue media is mounted.
const MediaMount = "/media/rewind"

// Media is a mounted rescue media file system.
type Media struct {
	Device string // /dev/sdb or /dev/sdb1
	Disk   string // the whole disk's name: sdb
	FSType string
	Dir    string // mount point
	RW     bool
}

// Path resolves a media:/path location to a path under the mount point.
func (m *Media) Path(p string) string {
	return filepath.Join(m.Dir, filepath.Clean("/"+p))
}

// blockDevices lists every block device and partition with the whole
// disk it belongs to.
func blockDevices() map[string]string {
	out := map[string]string{}
	entries, _ := os.ReadDir("/sys/class/block")
	for _, e := range entries {
		real, err := filepath.EvalSymlinks(filepath.Join("/sys/class/block", e.Name()))
		if err != nil {
			continue
		}
		disk := e.Name()
		if _, err := os.Stat(filepath.Join(real, "partition")); err == nil {
			disk = filepath.Base(filepath.Dir(real))
		}
		out[e.Name()] = disk
	}
	return out
}

// FindMedia looks for a file system labelled REWIND and mounts it,
// read-write when it can (reports go there), else read-only.
func FindMedia(drivers *Drivers) (*Media, error) {
	devs := blockDevices()
	names := make([]string, 0, len(devs))
	for n := range devs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") {
			continue
		}
		dev := "/dev/" + n
		f, err := os.Open(dev)
		if err != nil {
			continue
		}
		fs := diskrestore.ProbeFS(f)
		f.Close()
		if !strings.EqualFold(fs.Label, MediaLabel) {
			continue
		}
		fstype := fs.MountType()
		switch fstype {
		case "vfat":
			drivers.Load("vfat", "nls_cp437", "nls_iso8859_1", "nls_utf8", "nls_ascii")
		case "ext4":
			drivers.Load("ext4")
		case "iso9660":
			drivers.Load("isofs")
		}
		m := &Media{Device: dev, Disk: devs[n], FSType: fstype, Dir: MediaMount}
		os.MkdirAll(m.Dir, 0o755)
		data := ""
		if fstype == "vfat" {
			// Kernels default to iocharset=ascii, often a module of its own.
			data = "iocharset=utf8"
		}
		if err := unix.Mount(dev, m.Dir, fstype, 0, data); err == nil {
			m.RW = true
			return m, nil
		}
		if err := unix.Mount(dev, m.Dir, fstype, unix.MS_RDONLY, data); err != nil {
			return nil, fmt.Errorf("found %s file system labelled %s on %s but cannot mount it: %w", fstype, MediaLabel, dev, err)
		}
		return m, nil
	}
	return nil, errNoMedia
}

var errNoMedia = errors.New("no file system labelled " + MediaLabel + " found")
