package testdisk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// UsedDisk describes a GPT disk that has been in use: it is filled with
// random bytes first (the data of earlier use), then gets an ext4, a FAT32
// and an NTFS partition, each written over that old data without discarding
// it, filled with files that look like a used system (binaries, text,
// already-compressed data from FilesFrom, plus random files) and then has
// some of its files deleted, so that free blocks hold old data of both kinds.
//
// The partitions take 5/8, 1/4 and the rest of the disk; the first and the
// last MiB (partition tables, alignment) are zero, as a partitioning tool
// leaves them. Build needs root (it attaches loop devices), the tools in
// UsedTools, and for the same Seed and the same FilesFrom content it writes
// the same files to the same places.
type UsedDisk struct {
	Size      int64    // whole disk, bytes; at least 256 MiB
	Seed      uint64   // old data, file choice and random files
	FilesFrom []string // directories whose files fill the file systems (default /usr/lib, /usr/share)
	// UsedPercent and DeletedPercent are the shares of each file system
	// its live files and its deleted files take (defaults 20 and 20).
	UsedPercent, DeletedPercent int64
}

// UsedTools lists the commands UsedDisk.Build and the checks need.
var UsedTools = []string{"sgdisk", "losetup", "mkfs.ext4", "debugfs", "e2fsck", "mkfs.vfat", "mcopy", "mdel", "fsck.vfat", "mkntfs", "ntfscp", "ntfsls", "ntfstruncate", "ntfscat", "ntfsfix"}

// MissingUsedTool returns the first tool in UsedTools that is not
// installed, or "".
func MissingUsedTool() string {
	for _, t := range UsedTools {
		if _, err := exec.LookPath(t); err != nil {
			return t
		}
	}
	return ""
}

// UsedPartition is one file system of a built UsedDisk.
type UsedPartition struct {
	Number     int        // GPT partition number
	Start, End int64      // byte range on the disk, [Start, End)
	FS         string     // "ext4", "vfat" or "ntfs" (blkid's names)
	Live       int64      // bytes of the files left on it
	Deleted    int64      // bytes of the files deleted from it
	Files      []UsedFile // a few live files, to read back
	Gone       []UsedFile // a few deleted random files, with Head set
}

// UsedFile is a live file kept for read-back checks.
type UsedFile struct {
	Path   string // inside the file system, from its root
	Size   int64
	SHA256 string // hex
	Head   []byte // deleted files: their first 4 KiB, still in a free block
}

// usedFile is a file chosen for a file system: from the host or random.
type usedFile struct {
	src    string   // host path, or "" for random bytes
	more   []string // more host files appended to src (NTFS bundles)
	seed   uint64
	size   int64
	name   string // inside the file system
	delete bool
}

// Build writes the disk to path and returns its partitions in table order.
func (u UsedDisk) Build(path string) ([]UsedPartition, error) {
	const mib = 1 << 20
	if u.Size < 256*mib {
		return nil, fmt.Errorf("testdisk: a used disk needs at least 256 MiB, not %d bytes", u.Size)
	}
	if len(u.FilesFrom) == 0 {
		u.FilesFrom = []string{"/usr/lib", "/usr/share"}
	}
	if u.UsedPercent == 0 {
		u.UsedPercent = 20
	}
	if u.DeletedPercent == 0 {
		u.DeletedPercent = 20
	}
	size := u.Size / mib * mib
	ext := size * 5 / 8 / mib * mib
	fat := size / 4 / mib * mib
	parts := []UsedPartition{
		{Number: 1, Start: mib, End: mib + ext, FS: "ext4"},
		{Number: 2, Start: mib + ext, End: mib + ext + fat, FS: "vfat"},
		{Number: 3, Start: mib + ext + fat, End: size - mib, FS: "ntfs"},
	}

	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.Truncate(u.Size); err != nil {
		return nil, err
	}
	// The old data: every partition's bytes; the table areas stay zero.
	for i, p := range parts {
		if err := RandomFill(f, p.Start, p.End-p.Start, u.Seed+uint64(i)); err != nil {
			return nil, fmt.Errorf("testdisk: old data for partition %d: %w", p.Number, err)
		}
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	sec := func(n int64) string { return strconv.FormatInt(n/512, 10) }
	args := []string{"-o",
		"-U", "2d1b7a3e-4c5f-4e6a-9b8c-7d6e5f4a3b2c",
		"-n", "1:" + sec(parts[0].Start) + ":" + sec(parts[0].End-1), "-t", "1:8300", "-c", "1:root", "-u", "1:8c2f0e3a-1b4d-4e5f-a6b7-c8d9e0f1a2b3",
		"-n", "2:" + sec(parts[1].Start) + ":" + sec(parts[1].End-1), "-t", "2:0700", "-c", "2:shared", "-u", "2:9d3a1f4b-2c5e-4f6a-b7c8-d9e0f1a2b3c4",
		"-n", "3:" + sec(parts[2].Start) + ":" + sec(parts[2].End-1), "-t", "3:0700", "-c", "3:windata", "-u", "3:ae4b2a5c-3d6f-4a7b-c8d9-e0f1a2b3c4d5",
		path}
	if err := run("sgdisk", args...); err != nil {
		return nil, err
	}

	work, err := os.MkdirTemp(filepath.Dir(path), ".useddisk-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	pool, err := hostFiles(u.FilesFrom, u.Seed)
	if err != nil {
		return nil, err
	}
	for i := range parts {
		p := &parts[i]
		n := p.End - p.Start
		files := pool.take(p.FS, n*u.UsedPercent/100, n*u.DeletedPercent/100, u.Seed+uint64(100*(i+1)))
		dev, err := LoopRange(path, p.Start, n, true)
		if err != nil {
			return nil, err
		}
		err = u.populate(p, dev, filepath.Join(work, p.FS), files)
		if derr := Detach(dev); err == nil {
			err = derr
		}
		if err != nil {
			return nil, fmt.Errorf("testdisk: partition %d (%s): %w", p.Number, p.FS, err)
		}
	}
	return parts, f.Sync()
}

// populate makes p's file system on dev, writes files (staged in dir), then
// deletes those marked to go.
func (u UsedDisk) populate(p *UsedPartition, dev, dir string, files []usedFile) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, uf := range files {
		if err := stage(filepath.Join(dir, uf.name), uf); err != nil {
			return err
		}
		if uf.delete {
			p.Deleted += uf.size
			continue
		}
		p.Live += uf.size
	}
	var del []string
	for _, uf := range files {
		if uf.delete {
			del = append(del, uf.name)
		}
	}
	switch p.FS {
	case "ext4":
		// Fixed UUID, hash seed and time: the same input makes the same bytes.
		cmd := exec.Command("mkfs.ext4", "-q", "-F", "-L", "root", "-U", "3e5c7a9b-1d2f-4a6b-8c0d-2e4f6a8b0c1d",
			"-E", "nodiscard,hash_seed=4f6e8d0c-2b1a-4c3e-9f5d-7a9b1c3d5e7f", "-d", dir, dev)
		cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1795000000", "SOURCE_DATE_EPOCH=1795000000")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("mkfs.ext4 on %s: %v: %s", dev, err, out)
		}
		var script strings.Builder
		for _, name := range del {
			fmt.Fprintf(&script, "rm /%s\n", name)
		}
		cmdFile := dir + ".debugfs"
		if err := os.WriteFile(cmdFile, []byte(script.String()), 0o644); err != nil {
			return err
		}
		out, err := exec.Command("debugfs", "-w", "-f", cmdFile, dev).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("rm: ")) {
			return fmt.Errorf("debugfs rm on %s: %v: %s", dev, err, lastLine(out))
		}
	case "vfat":
		if err := run("mkfs.vfat", "-F", "32", "-n", "SHARED", "-i", "5eed2026", dev); err != nil {
			return err
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		args := []string{"-s", "-Q", "-i", dev}
		for _, e := range entries {
			args = append(args, filepath.Join(dir, e.Name()))
		}
		if err := run("mcopy", append(args, "::/")...); err != nil {
			return err
		}
		if len(del) > 0 {
			args := []string{"-i", dev}
			for _, name := range del {
				args = append(args, "::/"+name)
			}
			if err := run("mdel", args...); err != nil {
				return err
			}
		}
	case "ntfs":
		if err := run("mkntfs", "-F", "-Q", "-q", "-L", "windata", "-p", strconv.FormatInt(p.Start/512, 10), "-H", "255", "-S", "63", dev); err != nil {
			return err
		}
		// ntfscp makes no directories: NTFS gets its files flat, and
		// (no ntfsrm without mounting) "deleted" files are truncated to
		// zero bytes, which frees their clusters and leaves the data.
		for _, uf := range files {
			if err := run("ntfscp", "-q", dev, filepath.Join(dir, uf.name), "/"+uf.name); err != nil {
				return err
			}
		}
		if len(del) > 0 {
			inodes, err := ntfsInodes(dev)
			if err != nil {
				return err
			}
			for _, name := range del {
				ino, ok := inodes[name]
				if !ok {
					return fmt.Errorf("ntfsls on %s does not list %s", dev, name)
				}
				if err := run("ntfstruncate", dev, ino, "0"); err != nil {
					return err
				}
			}
		}
	default:
		return fmt.Errorf("no builder for file system %q", p.FS)
	}
	// A few live files for read-back checks: the largest of each kind.
	var keep []usedFile
	for _, random := range []bool{false, true} {
		var best *usedFile
		for i, uf := range files {
			if !uf.delete && (uf.src == "") == random && (best == nil || uf.size > best.size) {
				best = &files[i]
			}
		}
		if best != nil {
			keep = append(keep, *best)
		}
	}
	for i, uf := range files {
		if !uf.delete && len(keep) < 4 && i%7 == 3 {
			keep = append(keep, uf)
		}
	}
	for _, uf := range files {
		if uf.delete && uf.src == "" && len(keep) < 7 {
			keep = append(keep, uf)
		}
	}
	for _, uf := range keep {
		b, err := os.ReadFile(filepath.Join(dir, uf.name))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		f := UsedFile{Path: "/" + uf.name, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
		if !uf.delete {
			p.Files = append(p.Files, f)
			continue
		}
		f.Head = b[:4096]
		p.Gone = append(p.Gone, f)
	}
	return nil
}

// stage writes uf's content to path.
func stage(path string, uf usedFile) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if uf.src == "" {
		return os.WriteFile(path, RandomBytes(uf.seed, int(uf.size)), 0o644)
	}
	if len(uf.more) == 0 && os.Link(uf.src, path) == nil {
		return nil // a hard link: mkfs.ext4 -d and mcopy read it, nobody writes it
	}
	var all []byte
	for _, src := range append([]string{uf.src}, uf.more...) {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		all = append(all, b...)
	}
	return os.WriteFile(path, all, 0o644)
}

// pool is the host files a UsedDisk draws from, in a seeded order.
type pool struct {
	files []usedFile
	next  int
}

// hostFiles lists the regular files of 1 KiB to 8 MiB under dirs (walked
// in lexical order) and shuffles them with seed.
func hostFiles(dirs []string, seed uint64) (*pool, error) {
	var files []usedFile
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if e != nil && e.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !e.Type().IsRegular() {
				return nil
			}
			info, err := e.Info()
			if err != nil || info.Size() < 1<<10 || info.Size() > 8<<20 {
				return nil
			}
			files = append(files, usedFile{src: p, size: info.Size()})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("testdisk: no files of 1 KiB to 8 MiB under %s", strings.Join(dirs, ", "))
	}
	rand.New(rand.NewPCG(seed, 0xf11e5)).Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
	return &pool{files: files}, nil
}

// take returns files for one file system: live bytes of host files and
// random files (one byte in eight), and deleted bytes more, interleaved so
// that deleted files leave holes between live ones. Names are unique, ASCII
// and case-insensitively distinct (FAT); NTFS gets them flat.
func (pl *pool) take(fsName string, live, deleted int64, seed uint64) []usedFile {
	rng := rand.New(rand.NewPCG(seed, 0x7a4e))
	var out []usedFile
	var liveN, delN, randomN int64
	randomGone := false
	for i := 0; liveN < live || delN < deleted; i++ {
		var uf usedFile
		if randomN < (liveN+delN)/8 {
			uf = usedFile{seed: seed + uint64(i), size: 64<<10 + rng.Int64N(1<<20)/512*512}
			randomN += uf.size
		} else {
			if pl.next == len(pl.files) {
				pl.next = 0
			}
			uf = pl.files[pl.next]
			pl.next++
			// NTFS: ntfscp writes one file per run, so host files go in
			// bundles of 1 MiB or more (archives, as on a data volume).
			for fsName == "ntfs" && uf.size < 1<<20 {
				if pl.next == len(pl.files) {
					pl.next = 0
				}
				uf.more = append(uf.more, pl.files[pl.next].src)
				uf.size += pl.files[pl.next].size
				pl.next++
			}
		}
		uf.delete = liveN >= live || (delN < deleted && rng.IntN(2) == 0)
		if uf.src == "" && deleted > 0 && !randomGone {
			uf.delete, randomGone = true, true // one at least, for UsedPartition.Gone
		}
		if uf.delete {
			delN += uf.size
		} else {
			liveN += uf.size
		}
		uf.name = fileName(fsName, i, uf)
		out = append(out, uf)
	}
	return out
}

// fileName places file i: ext4 and FAT get a directory per origin, NTFS a
// flat name.
func fileName(fsName string, i int, uf usedFile) string {
	dir, base := "home", "data.bin"
	if uf.src != "" {
		rel := strings.TrimPrefix(uf.src, "/usr/")
		dir, _, _ = strings.Cut(rel, "/")
		base = filepath.Base(uf.src)
	}
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, base)
	if len(clean) > 40 {
		clean = clean[len(clean)-40:]
	}
	name := fmt.Sprintf("%05d-%s", i, clean)
	if fsName == "ntfs" {
		return dir + "-" + name
	}
	return dir + "/" + name
}

// ntfsInodes maps the names in the root of the NTFS on dev to their MFT
// record numbers.
func ntfsInodes(dev string) (map[string]string, error) {
	out, err := exec.Command("ntfsls", "-i", dev).Output()
	if err != nil {
		return nil, fmt.Errorf("ntfsls -i %s: %v", dev, err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			m[f[1]] = f[0]
		}
	}
	return m, nil
}

// RandomFill writes n deterministic pseudo-random bytes for seed at off.
func RandomFill(f *os.File, off, n int64, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 0x01d))
	buf := make([]byte, 4<<20)
	for done := int64(0); done < n; {
		k := min(int64(len(buf)), n-done)
		for i := 0; i < int(k); i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], rng.Uint64())
		}
		if _, err := f.WriteAt(buf[:k], off+done); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// LoopRange attaches the bytes [off, off+size) of path to a loop device
// (read-only unless rw) and returns its name; Detach releases it. Unlike
// Loop it needs no testing.TB, for the benchmark.
func LoopRange(path string, off, size int64, rw bool) (string, error) {
	args := []string{"-f", "--show", "-o", strconv.FormatInt(off, 10), "--sizelimit", strconv.FormatInt(size, 10)}
	if !rw {
		args = append(args, "-r")
	}
	out, err := exec.Command("losetup", append(args, path)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("losetup %s %s: %v: %s", strings.Join(args, " "), path, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// Detach releases a loop device from LoopRange.
func Detach(dev string) error { return run("losetup", "-d", dev) }

// Check runs the file system's own checker on dev, read-only (e2fsck -fn,
// fsck.vfat -n, ntfsfix -n), and returns its output in the error when it
// finds a problem.
func (p UsedPartition) Check(dev string) error {
	var cmd *exec.Cmd
	switch p.FS {
	case "ext4":
		cmd = exec.Command("e2fsck", "-fn", dev)
	case "vfat":
		cmd = exec.Command("fsck.vfat", "-n", dev)
	case "ntfs":
		cmd = exec.Command("ntfsfix", "-n", dev)
	default:
		return fmt.Errorf("no checker for %s", p.FS)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("partition %d (%s on %s): %s: %v: %s", p.Number, p.FS, dev, strings.Join(cmd.Args, " "), err, lastLines3(out))
	}
	return nil
}

// ReadFile reads the file at path (from the root) out of the file system
// on dev with the file system's own tools: debugfs, mcopy, ntfscat.
func (p UsedPartition) ReadFile(dev, path string) ([]byte, error) {
	var cmd *exec.Cmd
	switch p.FS {
	case "ext4":
		cmd = exec.Command("debugfs", "-R", "cat "+path, dev)
	case "vfat":
		cmd = exec.Command("mcopy", "-n", "-i", dev, "::"+path, "-")
	case "ntfs":
		cmd = exec.Command("ntfscat", dev, path)
	default:
		return nil, fmt.Errorf("no reader for %s", p.FS)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("partition %d (%s on %s): %s: %v: %s", p.Number, p.FS, dev, strings.Join(cmd.Args, " "), err, lastLines3(stderr.Bytes()))
	}
	return out, nil
}

// Verify checks the file system on dev and reads its kept files back,
// comparing their SHA-256 with what was written.
func (p UsedPartition) Verify(dev string) error {
	if err := p.Check(dev); err != nil {
		return err
	}
	return p.ReadBack(dev)
}

// ReadBack reads the kept files out of the file system on dev and compares
// their SHA-256 with what was written.
func (p UsedPartition) ReadBack(dev string) error {
	for _, f := range p.Files {
		b, err := p.ReadFile(dev, f.Path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != f.SHA256 {
			return fmt.Errorf("partition %d (%s on %s): file %s reads back %d bytes with SHA-256 %s, want %d bytes with %s", p.Number, p.FS, dev, f.Path, len(b), got[:16], f.Size, f.SHA256[:16])
		}
	}
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func lastLines3(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-3):], " / ")
}
