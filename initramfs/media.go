// Package initramfs builds Rewind's rescue initramfs: the base archive made
// once with u-root (core commands, rewind, rewind-init), and the per-machine
// overlay (plan, trusted keys, kernel modules, extra drivers) appended to it
// as a second cpio archive, so that building media needs no Go toolchain.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Paths inside the rescue initramfs that rewind-init reads.
const (
	PlanPath    = "etc/rewind/plan.toml"
	TrustDir    = "etc/rewind/trust"
	DriversDir  = "etc/rewind/drivers"
	ModulesRoot = "lib/modules"
	MediaIDPath = "etc/rewind/media-id"
	// S3CredentialsPath holds the S3 credentials a plan's [s3]
	// credential names (rescue.DefaultS3Credentials), mode 0600.
	S3CredentialsPath = "etc/rewind/s3-credentials"
)

// Overlay is what a media build adds on top of the base archive.
type Overlay struct {
	Plan       []byte            // plan.toml; nil for none
	Trust      map[string][]byte // trusted public key files by base name
	Modules    *ModuleSet        // kernel modules with their metadata; nil for none
	DriversDir string            // extra *.ko files loaded at boot, "" for none
	// MediaID is the identity of the medium the image is built for
	// (NewMediaID), written to MediaIDPath; "" writes none.
	MediaID string
	// CABundle is the PEM bundle of certificate authorities written to
	// CABundlePath, where Go's TLS finds them: without it no https://
	// server can be verified in the rescue environment. nil for none.
	CABundle []byte
	// S3Credentials is the AWS-format credentials file written to
	// S3CredentialsPath; nil for none.
	S3Credentials []byte
}

// The CA bundle: where Debian's ca-certificates package keeps it on the
// host, and where the rescue initramfs carries it.
const (
	HostCABundle = "/etc/ssl/certs/ca-certificates.crt"
	CABundlePath = "etc/ssl/certs/ca-certificates.crt"
)

// Write writes the overlay as one cpio archive.
func (o *Overlay) Write(out io.Writer) error {
	w := NewWriter(out)
	if o.MediaID != "" {
		if err := w.File(MediaIDPath, 0o644, []byte(o.MediaID+"\n")); err != nil {
			return err
		}
	}
	if o.Plan != nil {
		if err := w.File(PlanPath, 0o644, o.Plan); err != nil {
			return err
		}
	}
	if o.CABundle != nil {
		if err := w.File(CABundlePath, 0o644, o.CABundle); err != nil {
			return err
		}
	}
	if o.S3Credentials != nil {
		if err := w.File(S3CredentialsPath, 0o600, o.S3Credentials); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(o.Trust))
	for n := range o.Trust {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := w.File(filepath.Join(TrustDir, filepath.Base(n)), 0o644, o.Trust[n]); err != nil {
			return err
		}
	}
	if o.Modules != nil {
		if err := o.Modules.Write(w); err != nil {
			return err
		}
	}
	if o.DriversDir != "" {
		if err := writeDrivers(w, o.DriversDir); err != nil {
			return err
		}
	}
	return w.Close()
}

// DriverFiles lists the kernel modules (*.ko, *.ko.xz, ...) under dir
// that --drivers puts into the image.
func DriverFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			files = append(files, p)
		}
		return err
	})
	return files, err
}

func writeDrivers(w *Writer, dir string) error {
	files, err := DriverFiles(dir)
	if err != nil {
		return fmt.Errorf("adding drivers from %s: %w", dir, err)
	}
	if len(files) == 0 {
		return fmt.Errorf("--drivers %s holds no kernel modules (*.ko, *.ko.xz, ...)", dir)
	}
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("adding drivers from %s: %w", dir, err)
		}
		if err := w.File(filepath.Join(DriversDir, filepath.Base(p)), 0o644, data); err != nil {
			return fmt.Errorf("adding drivers from %s: %w", dir, err)
		}
	}
	return nil
}

// Compose writes the gzip-compressed initramfs: base (a cpio archive, plain
// or gzip-compressed) followed by the overlay archive.
func Compose(out io.Writer, base []byte, o *Overlay) error {
	raw, err := decompressed(base)
	if err != nil {
		return err
	}
	zw, err := gzip.NewWriterLevel(out, gzip.BestSpeed)
	if err != nil {
		return err
	}
	if _, err := zw.Write(raw); err != nil {
		return err
	}
	if err := o.Write(zw); err != nil {
		return err
	}
	return zw.Close()
}

func decompressed(base []byte) ([]byte, error) {
	if len(base) >= 2 && base[0] == 0x1f && base[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(base))
		if err != nil {
			return nil, fmt.Errorf("base archive: %w", err)
		}
		return io.ReadAll(zr)
	}
	if !bytes.HasPrefix(base, []byte("070701")) {
		return nil, errors.New("base archive is neither a newc cpio archive nor gzip-compressed one; rebuild it with 'make initramfs'")
	}
	return base, nil
}

// MediaOptions describes a media build.
type MediaOptions struct {
	Base       []byte   // base archive
	Kernel     string   // path to the kernel image (bzImage)
	ModulesDir string   // /lib/modules/RELEASE; "" derives it from the kernel's release
	Modules    []string // module names; nil means DefaultModules
	NoModules  bool     // add no kernel modules (a kernel with everything built in)
	DriversDir string
	Plan       []byte
	Trust      map[string][]byte
	// S3Credentials goes to S3CredentialsPath (Overlay.S3Credentials).
	S3Credentials []byte
	MediaID       string // NewMediaID's identity of the medium, "" for none
	// CABundle is the host's CA bundle to copy into the image; ""
	// means HostCABundle when it exists (scripts/setup.sh installs
	// ca-certificates), else none.
	CABundle string
	OutDir   string
}

// MediaResult reports what a media build wrote.
type MediaResult struct {
	Kernel        string // path of the copied kernel
	Initramfs     string // path of initramfs.cpio.gz
	KernelRelease string // as read from the kernel image, if readable
	Modules       *ModuleSet
	CABundle      string // the CA bundle copied into the image, "" for none
}

// BuildMedia writes OutDir/vmlinuz and OutDir/initramfs.cpio.gz.
func BuildMedia(opts MediaOptions) (*MediaResult, error) {
	kernel, err := os.ReadFile(opts.Kernel)
	if err != nil {
		return nil, fmt.Errorf("reading kernel: %w", err)
	}
	res := &MediaResult{KernelRelease: KernelRelease(kernel)}
	o := &Overlay{Plan: opts.Plan, Trust: opts.Trust, DriversDir: opts.DriversDir, MediaID: opts.MediaID, S3Credentials: opts.S3Credentials}
	if o.CABundle, res.CABundle, err = readCABundle(opts.CABundle); err != nil {
		return nil, err
	}
	if !opts.NoModules {
		dir := opts.ModulesDir
		if dir == "" {
			if res.KernelRelease == "" {
				return nil, fmt.Errorf("cannot read the release of kernel %s; pass --modules /lib/modules/VERSION", opts.Kernel)
			}
			dir = filepath.Join("/lib/modules", res.KernelRelease)
		}
		names := opts.Modules
		if names == nil {
			names = DefaultModules
		}
		set, err := SelectModules(dir, names)
		if err != nil {
			return nil, err
		}
		if res.KernelRelease != "" && set.Release != res.KernelRelease {
			return nil, fmt.Errorf("modules in %s are for kernel %s but %s is kernel %s; pass the matching --modules directory",
				dir, set.Release, opts.Kernel, res.KernelRelease)
		}
		o.Modules, res.Modules = set, set
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, err
	}
	res.Kernel = filepath.Join(opts.OutDir, "vmlinuz")
	res.Initramfs = filepath.Join(opts.OutDir, "initramfs.cpio.gz")
	if err := os.WriteFile(res.Kernel, kernel, 0o644); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := Compose(&buf, opts.Base, o); err != nil {
		return nil, err
	}
	// An image holding an S3 secret is readable by its owner only.
	mode := os.FileMode(0o644)
	if o.S3Credentials != nil {
		mode = 0o600
	}
	if err := os.WriteFile(res.Initramfs, buf.Bytes(), mode); err != nil {
		return nil, err
	}
	if err := os.Chmod(res.Initramfs, mode); err != nil {
		return nil, err
	}
	return res, nil
}

// KernelRelease reads the release ("6.1.0-56-amd64") from an x86 bzImage's
// setup header, or returns "".
func KernelRelease(bz []byte) string {
	if len(bz) < 0x210 || string(bz[0x202:0x206]) != "HdrS" {
		return ""
	}
	off := int(bz[0x20e]) | int(bz[0x20f])<<8
	off += 0x200
	if off >= len(bz) {
		return ""
	}
	s := bz[off:]
	if i := bytes.IndexAny(s, " \x00"); i >= 0 {
		s = s[:i]
	}
	return string(s)
}

// NoMedium is the media identity of an image that boots from the network
// and has no medium: the rescue environment then uses no file system
// labelled REWIND it finds.
const NoMedium = "none"

// NewMediaID returns the identity of the medium a build of format writes,
// as the rescue environment finds it (the type and UUID blkid shows for
// the medium's REWIND file system), derived from seed (a hash of the
// build's inputs) and, for an ISO, the build time. The usb image's REWIND
// partition gets this FAT volume ID, the ISO this volume date; PXE has no
// medium (NoMedium); --format initramfs records none ("") so that a stick
// the user made is found by its label.
func NewMediaID(format string, seed []byte, now time.Time) string {
	h := sha256.Sum256(append(append([]byte{}, seed...), "medium"...))
	switch format {
	case FormatUSB:
		v := binary.BigEndian.Uint32(h[:4])
		return fmt.Sprintf("vfat %04X-%04X", v>>16, v&0xffff)
	case FormatISO:
		return fmt.Sprintf("iso9660 %s-%02d", now.UTC().Format("2006-01-02-15-04-05"), h[0]%100)
	case FormatPXE:
		return NoMedium
	}
	return ""
}

// mediaUUID returns the UUID part of a NewMediaID identity of type typ
// without its dashes ("1A2B3C4D", "2026112311271042"), or "".
func mediaUUID(id, typ string) string {
	t, uuid, ok := strings.Cut(id, " ")
	if !ok || t != typ {
		return ""
	}
	return strings.ReplaceAll(uuid, "-", "")
}

// readCABundle reads the CA bundle at path ("" for HostCABundle, skipped
// when absent) and checks that it holds certificates.
func readCABundle(path string) ([]byte, string, error) {
	explicit := path != ""
	if !explicit {
		path = HostCABundle
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("CA bundle: %w", err)
	}
	if !bytes.Contains(data, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, "", fmt.Errorf("CA bundle %s holds no PEM certificate; give a file like %s (Debian's ca-certificates)", path, HostCABundle)
	}
	return data, path, nil
}
