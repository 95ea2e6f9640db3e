package snapshot

import "golang.org/x/sys/unix"

// BufferSlots is how many chunk buffers a pipeline with jobs workers may
// hold, each of perSlot bytes: two per worker plus a few for the stages
// between, at most 64, and at most an eighth of the machine's memory, so a
// rescue environment on a many-core server with large chunks is not killed
// for memory. It is never below 4.
func BufferSlots(jobs int, perSlot int64) int {
	slots := min(2*jobs+4, 64)
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil && perSlot > 0 {
		total := int64(si.Totalram) * int64(si.Unit)
		slots = min(slots, int(total/8/perSlot))
	}
	return max(slots, 4)
}
