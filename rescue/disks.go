package rescue

import (
	"github.com/rewind-bmr/rewind/diskrestore"
)

// Disk is a disk as diskrestore lists it; the host CLI and the rescue
// environment choose targets by the same rules.
type Disk = diskrestore.Disk

// selectTarget lists the disks and picks the one spec names. exclude
// holds the rescue media's device, which is never a target. An empty spec
// selects the only disk that may be overwritten, and refuses to guess
// among several.
func selectTarget(spec string, exclude []string) (Disk, []Disk, error) {
	disks, err := diskrestore.ListDisks(diskrestore.ListOptions{Exclude: exclude})
	if err != nil {
		return Disk{}, nil, err
	}
	var s diskrestore.Spec
	if spec != "" {
		if s, err = diskrestore.ParseSpec(spec); err != nil {
			return Disk{}, disks, err
		}
	}
	d, err := diskrestore.SelectTarget(disks, s, nil)
	return d, disks, err
}
