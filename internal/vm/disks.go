package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// BlankDisk makes a sparse, zero image of size bytes.
func BlankDisk(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

// USBStick makes a FAT32 file system labelled REWIND of size bytes
// holding the given files: destination path on the stick -> host path (a
// file or a directory copied recursively).
func USBStick(path string, size int64, files map[string]string) error {
	if err := BlankDisk(path, size); err != nil {
		return err
	}
	if err := run("mkfs.vfat", "-F", "32", "-n", "REWIND", path); err != nil {
		return err
	}
	dsts := make([]string, 0, len(files))
	for d := range files {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	made := map[string]bool{}
	for _, dst := range dsts {
		dir := ""
		for _, part := range strings.Split(strings.Trim(filepath.Dir(dst), "/"), "/") {
			if part == "" || part == "." {
				continue
			}
			dir += "/" + part
			if !made[dir] {
				made[dir] = true
				if err := run("mmd", "-i", path, "::"+dir); err != nil {
					return err
				}
			}
		}
		if err := run("mcopy", "-i", path, files[dst], "::"+dst); err != nil {
			return err
		}
		made[dst] = true
	}
	return nil
}
