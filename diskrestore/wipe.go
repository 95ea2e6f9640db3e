package diskrestore

import (
	"io"

	"github.com/rewind-bmr/rewind/snapshot"
)

// TablePartitions returns the byte ranges of the partitions that the
// partition table on r lists, reading only the table's sectors: no file
// system is probed and no free space is scanned, so it is quick on a large
// disk. A restore reads a target's old table with it before clearing it,
// to zero the signatures at the ends of the old partitions. No table, or
// one that cannot be read, gives none.
func TablePartitions(r io.ReaderAt, size int64, sectorSize int) []PartitionRange {
	ss := int64(sectorSize)
	if ss <= 0 {
		ss = 512
	}
	if size < 2*ss {
		return nil
	}
	lba0, lba1 := make([]byte, ss), make([]byte, ss)
	if readFull(r, lba0, 0) != nil || readFull(r, lba1, ss) != nil {
		return nil
	}
	l := &snapshot.Layout{Table: "none", LogicalSectorSize: int(ss), DiskSize: size / ss * ss}
	var err error
	switch detectTable(lba0, lba1) {
	case "gpt":
		_, err = readGPT(r, l, lba0)
	case "mbr":
		_, err = readMBR(r, l, lba0)
	default:
		return nil
	}
	if err != nil {
		return nil
	}
	var parts []PartitionRange
	for _, p := range l.Partitions {
		if p.Extended {
			continue
		}
		parts = append(parts, PartitionRange{Number: p.Number, Start: int64(p.Start) * ss, Length: int64(p.Size) * ss})
	}
	return parts
}
