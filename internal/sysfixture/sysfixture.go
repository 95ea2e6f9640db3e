// Package sysfixture builds small sysfs and procfs trees under a test's
// temporary directory, so that code listing block devices can be tested
// against disks that are not on the machine: a USB stick, an NVMe drive, a
// disk held by device-mapper.
package sysfixture

import (
	"os"
	"path/filepath"
	"testing"
)

// Tree is a fake root directory (sys/, proc/ below it).
type Tree struct {
	t    testing.TB
	Root string
}

// New returns an empty tree in t's temporary directory.
func New(t testing.TB) *Tree {
	return &Tree{t: t, Root: t.TempDir()}
}

// Put writes content and a newline to path below the root.
func (f *Tree) Put(path, content string) {
	f.t.Helper()
	p := filepath.Join(f.Root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// Link makes path below the root a symbolic link to target.
func (f *Tree) Link(path, target string) {
	f.t.Helper()
	p := filepath.Join(f.Root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		f.t.Fatal(err)
	}
}

// Disk adds block device name under sys/devices/devPath with sectors
// 512-byte sectors, linked from sys/block. It is not removable, writable,
// with 512-byte logical and physical sectors unless files (paths relative
// to the device's directory, such as "removable" or "device/model") say
// otherwise.
func (f *Tree) Disk(name, devPath, sectors string, files map[string]string) {
	f.t.Helper()
	dir := "sys/devices/" + devPath + "/block/" + name
	defaults := map[string]string{
		"size": sectors, "queue/logical_block_size": "512", "queue/physical_block_size": "512", "removable": "0", "ro": "0",
	}
	for k, v := range defaults {
		if _, ok := files[k]; !ok {
			f.Put(dir+"/"+k, v)
		}
	}
	for k, v := range files {
		f.Put(dir+"/"+k, v)
	}
	f.Link("sys/block/"+name, "../devices/"+devPath+"/block/"+name)
}
