package initramfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultModules are the kernel modules a rescue environment needs on
// common PCs, servers and virtual machines: storage controllers and USB
// host controllers to find the target and the rescue media, NICs to reach
// a snapshot server, file systems to read the rescue media, and keyboards
// for the countdown. Names missing from a kernel (built in, or absent) are
// skipped.
var DefaultModules = []string{
	// storage
	"virtio_pci", "virtio_blk", "virtio_scsi", "ahci", "ata_piix", "nvme", "sd_mod", "sr_mod",
	// USB host controllers and mass storage
	"xhci_pci", "xhci_hcd", "ehci_pci", "ehci_hcd", "uhci_hcd", "ohci_pci", "ohci_hcd",
	"usb_storage", "uas",
	// keyboards for the countdown on a local console
	"usbhid", "hid_generic",
	// storage controllers of real servers and hypervisors
	"mpt3sas", "megaraid_sas", "hpsa", "smartpqi", "vmw_pvscsi", "hv_storvsc", "xen_blkfront", "mmc_block", "sdhci_pci",
	// NICs: QEMU, and the common chips of PCs and servers
	"e1000", "e1000e", "virtio_net", "igb", "igc", "ixgbe", "i40e", "r8169", "tg3", "bnx2", "bnx2x",
	"atlantic", "alx", "be2net", "vmxnet3", "hv_netvsc", "xen_netfront", "mlx4_en", "mlx5_core",
	// tagged VLANs of the plan's [network] (netcfg)
	"8021q",
	// hardware random number generators: the kernel's random pool is
	// ready sooner at boot (TLS and anything else that asks for random
	// bytes waits less); virtio_rng for VMs with an RNG device, the
	// x86 chipset RNGs, and TPMs (their RNG feeds the pool too)
	"virtio_rng", "intel_rng", "amd_rng", "via_rng", "tpm_tis", "tpm_crb",
	// file systems of the rescue media
	"ext4", "vfat", "fat", "isofs", "nls_cp437", "nls_iso8859_1", "nls_utf8", "nls_ascii",
	"crc32c_generic", "crc32c_intel",
	// EFI variables: the rescue environment reads the SecureBoot variable
	"efivarfs",
}

// metadataFiles are copied (filtered to the selected modules) so that
// rewind-init can coldplug by modalias and resolve dependencies.
var metadataFiles = []string{"modules.dep", "modules.alias", "modules.softdep", "modules.builtin"}

// ModuleSet is a set of kernel modules chosen from a modules directory
// (/lib/modules/VERSION) together with everything they depend on.
type ModuleSet struct {
	Dir     string   // the modules directory
	Release string   // its kernel release, the directory's base name
	Files   []string // selected module files, relative to Dir, sorted
	Missing []string // requested names that are neither modules nor built in
}

type moduleIndex struct {
	byName  map[string]string   // normalized module name -> relative path
	deps    map[string][]string // relative path -> relative paths
	builtin map[string]bool     // normalized names
}

// ModuleName returns the normalized name of a module file or name:
// without directory and .ko[.xz|.gz|.zst] suffix, with '-' as '_'.
func ModuleName(file string) string {
	base := filepath.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

func readModuleIndex(dir string) (*moduleIndex, error) {
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("%s is not a kernel modules directory (%v); pass --modules /lib/modules/VERSION", dir, err)
	}
	ix := &moduleIndex{byName: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}}
	sc := bufio.NewScanner(bytes.NewReader(dep))
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		mod = strings.TrimSpace(mod)
		ix.byName[ModuleName(mod)] = mod
		ix.deps[mod] = strings.Fields(rest)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			ix.builtin[ModuleName(l)] = true
		}
	}
	return ix, nil
}

// SelectModules picks the named modules from dir and every module they
// depend on according to modules.dep.
func SelectModules(dir string, names []string) (*ModuleSet, error) {
	ix, err := readModuleIndex(dir)
	if err != nil {
		return nil, err
	}
	set := &ModuleSet{Dir: dir, Release: filepath.Base(filepath.Clean(dir))}
	chosen := map[string]bool{}
	var add func(rel string)
	add = func(rel string) {
		if chosen[rel] {
			return
		}
		chosen[rel] = true
		for _, d := range ix.deps[rel] {
			add(d)
		}
	}
	for _, n := range names {
		rel, ok := ix.byName[ModuleName(n)]
		switch {
		case ok:
			add(rel)
		case ix.builtin[ModuleName(n)]:
		default:
			set.Missing = append(set.Missing, n)
		}
	}
	for rel := range chosen {
		set.Files = append(set.Files, rel)
	}
	sort.Strings(set.Files)
	return set, nil
}

// Write adds the selected modules under lib/modules/RELEASE, plus
// modules.dep, modules.alias and modules.softdep restricted to them and
// modules.builtin as it is.
func (s *ModuleSet) Write(w *Writer) error {
	root := filepath.Join("lib/modules", s.Release)
	chosen := map[string]bool{}
	names := map[string]bool{}
	for _, rel := range s.Files {
		chosen[rel] = true
		names[ModuleName(rel)] = true
		data, err := os.ReadFile(filepath.Join(s.Dir, rel))
		if err != nil {
			return fmt.Errorf("reading kernel module: %w", err)
		}
		if err := w.File(filepath.Join(root, rel), 0o644, data); err != nil {
			return err
		}
	}
	for _, meta := range metadataFiles {
		data, err := os.ReadFile(filepath.Join(s.Dir, meta))
		if os.IsNotExist(err) && meta != "modules.dep" {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading module metadata: %w", err)
		}
		if meta != "modules.builtin" {
			data = filterLines(data, func(line string) bool {
				f := strings.Fields(line)
				switch meta {
				case "modules.dep":
					mod, _, _ := strings.Cut(line, ":")
					return chosen[strings.TrimSpace(mod)]
				case "modules.alias":
					return len(f) == 3 && f[0] == "alias" && names[ModuleName(f[2])]
				default: // modules.softdep
					return len(f) >= 2 && f[0] == "softdep" && names[ModuleName(f[1])]
				}
			})
		}
		if err := w.File(filepath.Join(root, meta), 0o644, data); err != nil {
			return err
		}
	}
	return nil
}

func filterLines(data []byte, keep func(string) bool) []byte {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if keep(sc.Text()) {
			out.WriteString(sc.Text())
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}
