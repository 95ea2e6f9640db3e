package initramfs

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// overlayFile extracts name from the overlay (the second archive) of the
// initramfs at path.
func overlayFile(t *testing.T, path string, baseLen int, name string) []byte {
	t.Helper()
	gz, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	if !slices.Contains(cpioList(t, raw[baseLen:]), name) {
		return nil
	}
	cmd := exec.Command("cpio", "-i", "--quiet", "--to-stdout", name)
	cmd.Stdin = bytes.NewReader(raw[baseLen:])
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -i %s: %v", name, err)
	}
	return out
}

// The rescue image carries a CA bundle where Go's TLS looks for one, so
// that https:// servers can be verified in it; a file that is not a PEM
// bundle is refused at build time.
func TestBuildMediaCarriesCABundle(t *testing.T) {
	dir := t.TempDir()
	var base bytes.Buffer
	bw := NewWriter(&base)
	bw.File("init", 0o755, []byte("#!/bin/sh\n"))
	bw.Close()
	kpath := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kpath, make([]byte, 0x400), 0o644)
	bundle := filepath.Join(dir, "ca.crt")
	pemData := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	os.WriteFile(bundle, pemData, 0o644)
	notPEM := filepath.Join(dir, "ca.der")
	os.WriteFile(notPEM, []byte{0x30, 0x82, 0x01}, 0o644)

	for _, tc := range []struct {
		name    string
		caFile  string
		want    []byte // the bundle in the image; nil: none
		wantErr string
	}{
		{"explicit bundle", bundle, pemData, ""},
		{"not a PEM bundle", notPEM, nil, "CA bundle " + notPEM + " holds no PEM certificate"},
		{"missing explicit bundle", filepath.Join(dir, "nope.crt"), nil, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := BuildMedia(MediaOptions{Base: base.Bytes(), Kernel: kpath, NoModules: true, CABundle: tc.caFile, OutDir: filepath.Join(t.TempDir(), "out")})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("BuildMedia with CA bundle %s: got %v, want an error saying %q", tc.caFile, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := overlayFile(t, res.Initramfs, base.Len(), CABundlePath); !bytes.Equal(got, tc.want) {
				t.Errorf("%s in the image: got %q, want %q", CABundlePath, got, tc.want)
			}
			if res.CABundle != tc.caFile {
				t.Errorf("MediaResult.CABundle: got %q, want %q", res.CABundle, tc.caFile)
			}
		})
	}

	// By default the host's bundle is copied, when the host has one.
	host, err := os.ReadFile(HostCABundle)
	if err != nil {
		t.Skipf("this host has no %s (scripts/setup.sh installs ca-certificates)", HostCABundle)
	}
	res, err := BuildMedia(MediaOptions{Base: base.Bytes(), Kernel: kpath, NoModules: true, OutDir: filepath.Join(dir, "default")})
	if err != nil {
		t.Fatal(err)
	}
	if got := overlayFile(t, res.Initramfs, base.Len(), CABundlePath); !bytes.Equal(got, host) {
		t.Errorf("%s in the default image: %d bytes, want the host's %s (%d bytes)", CABundlePath, len(got), HostCABundle, len(host))
	}
}

// The default module set of the Debian kernel includes the hardware RNG
// drivers, so that a VM with virtio-rng, or a PC with a chipset RNG,
// fills the kernel's random pool early.
func TestDefaultModulesIncludeRNGDrivers(t *testing.T) {
	mods, _ := filepath.Glob("/lib/modules/*/kernel/drivers/char/hw_random/virtio-rng.ko*")
	if len(mods) == 0 {
		t.Skip("no kernel with a virtio-rng module under /lib/modules (scripts/setup.sh installs linux-image-amd64)")
	}
	dir := strings.TrimSuffix(mods[0], "/kernel/drivers/char/hw_random/"+filepath.Base(mods[0]))
	set, err := SelectModules(dir, DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range set.Files {
		names = append(names, ModuleName(f))
	}
	for _, want := range []string{"virtio_rng", "intel_rng", "amd_rng", "via_rng"} {
		if !slices.Contains(names, want) {
			t.Errorf("default modules from %s lack %s: %v", dir, want, names)
		}
	}
}
