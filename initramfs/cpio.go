package initramfs

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Writer writes a cpio archive in the "newc" format that the Linux kernel
// unpacks into its initramfs. Entries are written in the order they are
// added; parent directories are created on demand so that an archive
// appended to another one never depends on what the first one holds.
type Writer struct {
	w    io.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

// NewWriter returns a Writer that writes an archive to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, ino: 1 << 20, dirs: map[string]bool{"": true, ".": true}}
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
)

// Dir adds directory name and its missing parents.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	name = clean(name)
	if w.dirs[name] {
		return w.err
	}
	if err := w.Dir(path.Dir(name), 0o755); err != nil {
		return err
	}
	w.dirs[name] = true
	return w.entry(name, modeDir|uint32(perm.Perm()), nil)
}

// File adds a regular file holding data.
func (w *Writer) File(name string, perm fs.FileMode, data []byte) error {
	name = clean(name)
	if err := w.Dir(path.Dir(name), 0o755); err != nil {
		return err
	}
	return w.entry(name, modeFile|uint32(perm.Perm()), data)
}

// Symlink adds a symbolic link name pointing at target.
func (w *Writer) Symlink(name, target string) error {
	name = clean(name)
	if err := w.Dir(path.Dir(name), 0o755); err != nil {
		return err
	}
	return w.entry(name, modeSymlink|0o777, []byte(target))
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	return w.entry("TRAILER!!!", 0, nil)
}

func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func (w *Writer) entry(name string, mode uint32, data []byte) error {
	if w.err != nil {
		return w.err
	}
	w.ino++
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	ino := w.ino
	if name == "TRAILER!!!" {
		ino, nlink = 0, 1
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(name)+8)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	if _, err := w.w.Write(buf); err != nil {
		w.err = err
		return err
	}
	if len(data) > 0 {
		if _, err := w.w.Write(data); err != nil {
			w.err = err
			return err
		}
		if n := len(data) % 4; n != 0 {
			if _, err := w.w.Write(make([]byte, 4-n)); err != nil {
				w.err = err
				return err
			}
		}
	}
	return nil
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
