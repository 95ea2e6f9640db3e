package diskrestore

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/rewind-bmr/rewind/fsmap"
	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/snapshot"
)

// StrayAreas drops the boot areas that begin at or after the start of the
// first partition: bytes between and after partitions, outside every file
// system, are what earlier use of the disk left there (a deleted
// partition, an old file system), not what the machine needs to boot,
// which lies before the first partition (boot code, the gap GRUB uses).
// It returns the extents kept and the bytes dropped; capture notes them,
// restore zeroes them, and capture --raw keeps them.
func StrayAreas(extents []snapshot.Extent) (kept []snapshot.Extent, dropped int64) {
	first := int64(-1)
	for _, e := range extents {
		if e.Kind == snapshot.ExtentPartition && (first < 0 || e.Offset < first) {
			first = e.Offset
		}
	}
	for _, e := range extents {
		if first >= 0 && e.Kind == snapshot.ExtentBootArea && e.Offset >= first {
			dropped += e.Length
			continue
		}
		kept = append(kept, e)
	}
	return kept, dropped
}

// NoteRaw is the note of an extent whose file system was recognised but
// not read because the capture was asked for every byte (--raw).
const NoteRaw = "--raw"

// UsedExtents reads the allocation map of the file system on every
// partition extent (and on the disk extent of a disk without a partition
// table) of the disk r, and says what capture may leave out. It returns a
// copy of extents with FS, Capture and Note set, and per extent (same
// index) the absolute byte ranges its file system does not use, for
// snapshot.CaptureOptions.Free:
//
//   - a file system whose map was read: FS set, Capture "used", its free
//     ranges (a swap area: everything after its header);
//   - no file system whose map Rewind reads (LVM, LUKS, xfs, random
//     bytes): stored whole, nothing said;
//   - a recognised file system whose map is damaged or uses a feature
//     Rewind does not read: stored whole, FS and Note (the reason) set;
//   - a file system that is not clean (an ext4 journal that needs
//     recovery, an NTFS volume marked dirty): an error that names the
//     partition and the way out, since its map may not describe its data.
//
// With raw, no map is read: every extent is stored whole, and those with a
// file system ProbeFS recognises get Note NoteRaw. Boot areas are always
// stored whole.
func UsedExtents(r io.ReaderAt, extents []snapshot.Extent, raw bool) ([]snapshot.Extent, [][]snapshot.Range, error) {
	out := make([]snapshot.Extent, len(extents))
	free := make([][]snapshot.Range, len(extents))
	for i, e := range extents {
		out[i] = e
		if e.Kind != snapshot.ExtentPartition && e.Kind != snapshot.ExtentDisk {
			continue
		}
		part := io.NewSectionReader(r, e.Offset, e.Length)
		if raw {
			if fs := ProbeFS(part); fs.Type != "" {
				out[i].FS, out[i].Note = fs.Type, NoteRaw
			}
			continue
		}
		m, err := fsmap.Read(part, e.Length)
		switch {
		case err == nil && m.FreeBytes() >= e.Length:
			err = fmt.Errorf("%s: %w: the map marks every block free", m.FS, fsmap.ErrDamaged)
		case err == nil:
			out[i].FS, out[i].Capture = m.FS, snapshot.CaptureUsed
			free[i] = make([]snapshot.Range, len(m.Free))
			for k, f := range m.Free {
				free[i][k] = snapshot.Range{Offset: e.Offset + f.Offset, Length: f.Length}
			}
			continue
		}
		switch {
		case errors.Is(err, fsmap.ErrAmbiguous):
			// Stored whole, saying why: a stale signature next to the
			// live one, which wipefs would remove.
			out[i].Note = snapshot.NoteText(err.Error())
		case errors.Is(err, fsmap.ErrUnknown):
			// Stored whole, silently: nothing Rewind could read.
		case errors.Is(err, fsmap.ErrDamaged), errors.Is(err, fsmap.ErrUnsupported):
			out[i].FS = ProbeFS(part).Type
			out[i].Note = snapshot.NoteText(err.Error())
		case errors.Is(err, fsmap.ErrNotClean):
			return nil, nil, notCleanError(e, ProbeFS(part).Type, err)
		default:
			return nil, nil, fmt.Errorf("read the file system of %s at byte %d: %w", describeExtent(e), e.Offset, err)
		}
	}
	return out, free, nil
}

// notCleanError is the refusal of a file system that is not clean: which
// partition, what fsmap found (the file system and its flag), and the ways
// out.
func notCleanError(e snapshot.Extent, fsType string, err error) error {
	where := fmt.Sprintf("partition %d (at byte %d of the disk, %s)", e.Partition, e.Offset, units.Bytes(e.Length))
	if e.Kind == snapshot.ExtentDisk {
		where = fmt.Sprintf("the file system on the whole disk (%s, no partition table)", units.Bytes(e.Length))
	}
	check := map[string]string{
		"ext2": "e2fsck -f", "ext3": "e2fsck -f", "ext4": "e2fsck -f", "vfat": "fsck.vfat -a",
		"ntfs": "chkdsk /f in Windows, or ntfsfix -d",
		"swap": "resume the system from its hibernation image, or discard it with mkswap",
	}[fsType]
	if check == "" {
		check = "e2fsck -f, fsck.vfat -a, chkdsk /f or ntfsfix -d, as fits it"
	}
	return fmt.Errorf("%s: %w; its allocation map may not describe the data on it, so it is not captured used-blocks. "+
		"Check it (%s), or mount and unmount it cleanly, or boot the machine and shut it down properly, then capture again; "+
		"or capture every byte of it with --raw", where, err, check)
}

// FreeChanged reads again the allocation map of every extent UsedExtents
// found a map for (free[i] not empty) and returns an error naming the
// first whose file system now uses bytes that were free when the map was
// first read: a file system written while it was captured (a loop device
// or a virtual machine's disk that another process writes) would restore
// with those new blocks zeroed. Blocks freed meanwhile are harmless: their
// old contents were stored.
func FreeChanged(r io.ReaderAt, extents []snapshot.Extent, free [][]snapshot.Range) error {
	if f, ok := r.(*os.File); ok {
		// Read the maps from the device, not from the page cache: a loop
		// device whose backing file another process writes keeps the
		// bitmaps of the first read cached, and they hide the change.
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
	for i, e := range extents {
		if i >= len(free) || len(free[i]) == 0 {
			continue
		}
		m, err := fsmap.Read(io.NewSectionReader(r, e.Offset, e.Length), e.Length)
		if err != nil {
			return fmt.Errorf("%s (at byte %d) changed while it was captured: its file system map now reads: %w", describeExtent(e), e.Offset, err)
		}
		now := m.Free
		k := 0
		for _, f := range free[i] {
			off, end := f.Offset-e.Offset, f.End()-e.Offset
			for k < len(now) && now[k].Offset+now[k].Length <= off {
				k++
			}
			if k == len(now) || now[k].Offset > off || now[k].Offset+now[k].Length < end {
				return fmt.Errorf("%s (at byte %d) changed while it was captured: bytes %d..%d of it were free when its %s map was read and are in use now", describeExtent(e), e.Offset, off, end, m.FS)
			}
		}
	}
	return nil
}
