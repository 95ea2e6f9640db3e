package rescue

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// MediaID is the identity of the rescue medium an image was built for,
// recorded in the initramfs by 'rewind media build' (OverlayMediaID): the
// type and UUID, as blkid shows them, of the medium's REWIND file system.
// The zero MediaID (an image built without a medium, --format initramfs,
// or by an older Rewind) falls back to the label; None is a PXE image,
// which has no medium.
type MediaID struct {
	Type string // vfat, iso9660
	UUID string // 1A2B-3C4D, 2026-11-23-11-27-10-42
	None bool
}

func (id MediaID) String() string {
	switch {
	case id.None:
		return "none"
	case id.Type == "":
		return "not recorded"
	}
	return id.Type + " " + id.UUID
}

// ReadMediaID reads the medium identity recorded at path: "TYPE UUID" or
// "none". A missing file is the zero MediaID; a malformed one is an error,
// not a fallback to the label.
func ReadMediaID(path string) (MediaID, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return MediaID{}, nil
	}
	if err != nil {
		return MediaID{}, fmt.Errorf("reading the rescue medium's identity: %w", err)
	}
	f := strings.Fields(string(b))
	switch {
	case len(f) == 1 && f[0] == "none":
		return MediaID{None: true}, nil
	case len(f) == 2 && (f[0] == "vfat" || f[0] == "iso9660" || f[0] == "ext4"):
		return MediaID{Type: f[0], UUID: f[1]}, nil
	}
	return MediaID{}, fmt.Errorf("%s holds %q, not a medium identity such as \"vfat 1A2B-3C4D\": rebuild the media with 'rewind media build'", path, strings.TrimSpace(string(b)))
}

// mediaCandidate is a file system that may be the rescue medium.
type mediaCandidate struct {
	Device string // /dev/sdb1
	Disk   string // sdb
	FS     diskrestore.FS
	UUID   string // as blkid shows it; for ISO 9660 the volume's date
}

// probeMedia probes the block devices of devs (name -> whole disk, as
// blockDevices returns them) and returns, in name order, those labelled
// REWIND or carrying id's type and UUID.
func probeMedia(devs map[string]string, id MediaID) []mediaCandidate {
	names := make([]string, 0, len(devs))
	for n := range devs {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []mediaCandidate
	for _, n := range names {
		dev := "/dev/" + n
		f, err := os.Open(dev)
		if err != nil {
			continue
		}
		c := mediaCandidate{Device: dev, Disk: devs[n], FS: diskrestore.ProbeFS(f)}
		c.UUID = c.FS.UUID
		if c.FS.Type == "iso9660" {
			c.UUID = isoUUID(f)
		}
		f.Close()
		if strings.EqualFold(c.FS.Label, MediaLabel) || id.matches(c) {
			out = append(out, c)
		}
	}
	return out
}

func (id MediaID) matches(c mediaCandidate) bool {
	return id.Type != "" && c.FS.Type == id.Type && strings.EqualFold(c.UUID, id.UUID)
}

// chooseMedia picks the rescue medium among the candidates: the file
// system with the recorded identity when there is one (a disk that is
// merely labelled REWIND is not the medium), else the one labelled REWIND.
// Candidates on two or more disks are refused, naming them. Several on one
// disk (a hybrid ISO's whole disk and its first partition) are one medium:
// the first in name order. No candidate wraps errNoMedia.
func chooseMedia(cands []mediaCandidate, id MediaID) (mediaCandidate, error) {
	var picked, ignored []mediaCandidate
	for _, c := range cands {
		if id.Type == "" || id.matches(c) {
			picked = append(picked, c)
		} else {
			ignored = append(ignored, c)
		}
	}
	var disks []string
	byDisk := map[string]mediaCandidate{}
	for _, c := range picked {
		if _, ok := byDisk[c.Disk]; !ok {
			byDisk[c.Disk] = c
			disks = append(disks, c.Disk)
		}
	}
	describe := func(cs []mediaCandidate) string {
		var s []string
		for _, c := range cs {
			s = append(s, fmt.Sprintf("%s (%s %s, label %q)", c.Device, orNone(c.FS.Type), orNone(c.UUID), c.FS.Label))
		}
		return strings.Join(s, ", ")
	}
	switch {
	case len(disks) == 1:
		return byDisk[disks[0]], nil
	case len(disks) == 0 && id.Type != "" && len(ignored) > 0:
		return mediaCandidate{}, fmt.Errorf("%w: no file system has this rescue image's identity %s; not the medium: %s", errNoMedia, id, describe(ignored))
	case len(disks) == 0 && id.Type != "":
		return mediaCandidate{}, fmt.Errorf("%w: no file system has this rescue image's identity %s", errNoMedia, id)
	case len(disks) == 0:
		return mediaCandidate{}, fmt.Errorf("%w: no file system labelled %s", errNoMedia, MediaLabel)
	case id.Type != "":
		return mediaCandidate{}, fmt.Errorf("the rescue medium's file system (%s) is on %d disks: %s; a copy of the stick is attached: remove all but one",
			id, len(disks), describe(picked))
	}
	return mediaCandidate{}, fmt.Errorf("file systems labelled %s are on %d disks: %s; this rescue image records no medium identity (built with --format initramfs or by an older Rewind), so it cannot tell which is its medium: detach or relabel the others, or build the medium with 'rewind media build --format usb' or 'iso'",
		MediaLabel, len(disks), describe(picked))
}

// isoUUID is an ISO 9660 volume's UUID as blkid shows it: the primary
// volume descriptor's modification date (else its creation date) as
// YYYY-MM-DD-HH-MM-SS-CC, or "".
func isoUUID(r io.ReaderAt) string {
	pvd := make([]byte, 2048)
	if _, err := r.ReadAt(pvd, 16*2048); err != nil || pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return ""
	}
	for _, off := range []int{830, 813} { // modification, creation
		d := pvd[off : off+16]
		if strings.Trim(string(d), "0\x00") == "" {
			continue
		}
		return fmt.Sprintf("%s-%s-%s-%s-%s-%s-%s", d[0:4], d[4:6], d[6:8], d[8:10], d[10:12], d[12:14], d[14:16])
	}
	return ""
}

// FindMedia finds the rescue medium (chooseMedia) and mounts it,
// read-write when it can (reports go there), else read-only.
func FindMedia(drivers *Drivers, id MediaID) (*Media, error) {
	devs := blockDevices()
	for n := range devs {
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") {
			delete(devs, n)
		}
	}
	c, err := chooseMedia(probeMedia(devs, id), id)
	if err != nil {
		return nil, err
	}
	dev := c.Device
	fstype := c.FS.MountType()
	switch fstype {
	case "vfat":
		drivers.Load("vfat", "nls_cp437", "nls_iso8859_1", "nls_utf8", "nls_ascii")
	case "ext4":
		drivers.Load("ext4")
	case "iso9660":
		drivers.Load("isofs")
	}
	m := &Media{Device: dev, Disk: c.Disk, FSType: fstype, Dir: MediaMount}
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
		return nil, fmt.Errorf("found the rescue medium's %s file system on %s but cannot mount it: %w", fstype, dev, err)
	}
	return m, nil
}

var errNoMedia = errors.New("no rescue medium found")
