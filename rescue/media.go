package rescue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
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

// FSLabel reads the type and label of the file system on r: FAT12/16/32,
// ext2/3/4 or ISO 9660. It returns "" for anything else.
func FSLabel(r io.ReaderAt) (fstype, label string) {
	buf := make([]byte, 4096)
	if n, _ := r.ReadAt(buf[:2048], 0); n >= 512 && buf[510] == 0x55 && buf[511] == 0xaa {
		switch {
		case bytes.HasPrefix(buf[0x52:], []byte("FAT32")):
			return "vfat", fatLabel(buf[0x47 : 0x47+11])
		case bytes.HasPrefix(buf[0x36:], []byte("FAT1")):
			return "vfat", fatLabel(buf[0x2b : 0x2b+11])
		}
	}
	if n, _ := r.ReadAt(buf[:1024], 1024); n == 1024 && binary.LittleEndian.Uint16(buf[0x38:]) == 0xef53 {
		return "ext4", cString(buf[0x78 : 0x78+16])
	}
	if n, _ := r.ReadAt(buf[:2048], 0x8000); n == 2048 && string(buf[1:6]) == "CD001" {
		return "iso9660", strings.TrimSpace(string(buf[40:72]))
	}
	return "", ""
}

func fatLabel(b []byte) string {
	s := strings.TrimSpace(string(b))
	if s == "NO NAME" {
		return ""
	}
	return s
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
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
		fstype, label := FSLabel(f)
		f.Close()
		if !strings.EqualFold(label, MediaLabel) {
			continue
		}
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
