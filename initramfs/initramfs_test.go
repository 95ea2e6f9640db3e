package initramfs

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// cpioList lists an archive with the system's cpio -t.
func cpioList(t *testing.T, archive []byte) []string {
	t.Helper()
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio is not installed (scripts/setup.sh)")
	}
	cmd := exec.Command("cpio", "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(archive)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	return strings.Fields(string(out))
}

func TestWriterReadByCpio(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.File("etc/rewind/plan.toml", 0o644, []byte("[[machine]]\n"))
	w.File("/etc/rewind/trust/lab.pub", 0o644, []byte("key"))
	w.Symlink("bin/sh", "/bbin/gosh")
	w.Dir("media", 0o755)
	w.File("empty", 0o644, nil)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(cpioList(t, buf.Bytes()), " ")
	want := "etc etc/rewind etc/rewind/plan.toml etc/rewind/trust etc/rewind/trust/lab.pub bin bin/sh media empty"
	if got != want {
		t.Errorf("cpio -t lists %q, want %q", got, want)
	}
	// Extract and compare contents.
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet")
	cmd.Dir, cmd.Stdin = dir, bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v %s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/rewind/plan.toml")); string(b) != "[[machine]]\n" {
		t.Errorf("plan.toml holds %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "bin/sh")); l != "/bbin/gosh" {
		t.Errorf("bin/sh points at %q, want /bbin/gosh", l)
	}
}

// fakeModules makes a modules directory with a small modules.dep.
func fakeModules(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "6.1.0-test")
	files := map[string]string{
		"modules.dep": "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n" +
			"kernel/drivers/virtio/virtio.ko:\nkernel/drivers/virtio/virtio_ring.ko:\n" +
			"kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/usb/core/usbcore.ko\n" +
			"kernel/drivers/usb/core/usbcore.ko:\nkernel/drivers/gpu/big.ko:\n",
		"modules.alias":   "alias virtio:d00000002v* virtio_blk\nalias usb:v*ic08* usb_storage\nalias pci:v*big* big\n",
		"modules.softdep": "softdep virtio_blk pre: crc32c\nsoftdep big pre: x\n",
		"modules.builtin": "kernel/fs/ext4/ext4.ko\n",
	}
	for _, rel := range []string{"kernel/drivers/block/virtio_blk.ko", "kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko",
		"kernel/drivers/usb/storage/usb-storage.ko", "kernel/drivers/usb/core/usbcore.ko", "kernel/drivers/gpu/big.ko"} {
		files[rel] = "module " + rel
	}
	for rel, data := range files {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSelectModules(t *testing.T) {
	dir := fakeModules(t)
	set, err := SelectModules(dir, []string{"virtio_blk", "usb_storage", "ext4", "nosuch"})
	if err != nil {
		t.Fatal(err)
	}
	want := "kernel/drivers/block/virtio_blk.ko kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/storage/usb-storage.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko"
	if got := strings.Join(set.Files, " "); got != want {
		t.Errorf("files: got %q, want %q", got, want)
	}
	if got := strings.Join(set.Missing, " "); got != "nosuch" {
		t.Errorf("missing: got %q, want nosuch (ext4 is built in)", got)
	}
	if set.Release != "6.1.0-test" {
		t.Errorf("release: got %q", set.Release)
	}

	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := set.Write(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	list := strings.Join(cpioList(t, buf.Bytes()), " ")
	for _, f := range []string{"lib/modules/6.1.0-test/kernel/drivers/usb/storage/usb-storage.ko", "lib/modules/6.1.0-test/modules.alias",
		"lib/modules/6.1.0-test/modules.dep", "lib/modules/6.1.0-test/modules.softdep", "lib/modules/6.1.0-test/modules.builtin"} {
		if !strings.Contains(list, f) {
			t.Errorf("archive lacks %s", f)
		}
	}
	if strings.Contains(list, "big.ko") {
		t.Errorf("archive holds big.ko, which was not selected")
	}
}

func TestBuildMediaAppendsOverlay(t *testing.T) {
	dir := t.TempDir()
	// A base archive and a fake kernel whose release matches the modules.
	var base bytes.Buffer
	bw := NewWriter(&base)
	bw.File("init", 0o755, []byte("#!/bin/sh\n"))
	bw.Close()
	mods := fakeModules(t)
	kernel := make([]byte, 0x400)
	copy(kernel[0x202:], "HdrS")
	kernel[0x20e], kernel[0x20f] = 0x00, 0x01 // version string at 0x200+0x100
	copy(kernel[0x300:], "6.1.0-test (builder) #1 SMP\x00")
	kpath := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kpath, kernel, 0o644)
	if got := KernelRelease(kernel); got != "6.1.0-test" {
		t.Fatalf("KernelRelease: got %q", got)
	}
	res, err := BuildMedia(MediaOptions{
		Base: base.Bytes(), Kernel: kpath, ModulesDir: mods, Modules: []string{"virtio_blk"},
		Plan: []byte("[[machine]]\nsnapshot = \"media:/s\"\n"), Trust: map[string][]byte{"lab.pub": []byte("rewind-ed25519-public x")},
		MediaID: "vfat 1A2B-3C4D", OutDir: filepath.Join(dir, "out"),
	})
	if err != nil {
		t.Fatal(err)
	}
	gz, err := os.ReadFile(res.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	// cpio -t stops at the first trailer: the base comes first.
	if got := cpioList(t, raw); len(got) != 1 || got[0] != "init" {
		t.Errorf("first archive lists %q, want [init]", got)
	}
	overlay := raw[base.Len():]
	list := strings.Join(cpioList(t, overlay), " ")
	for _, f := range []string{PlanPath, TrustDir + "/lab.pub", MediaIDPath, "lib/modules/6.1.0-test/kernel/drivers/block/virtio_blk.ko"} {
		if !strings.Contains(list, f) {
			t.Errorf("overlay lacks %s: %s", f, list)
		}
	}
	if k, _ := os.ReadFile(res.Kernel); !bytes.Equal(k, kernel) {
		t.Errorf("the kernel was not copied")
	}

	// Modules for another kernel are refused.
	_, err = BuildMedia(MediaOptions{Base: base.Bytes(), Kernel: kpath, ModulesDir: filepath.Join(filepath.Dir(mods), "6.1.0-test"), OutDir: dir})
	if err != nil {
		t.Errorf("matching modules: %v", err)
	}
	other := filepath.Join(t.TempDir(), "5.10.0")
	os.Rename(mods, other)
	if _, err = BuildMedia(MediaOptions{Base: base.Bytes(), Kernel: kpath, ModulesDir: other, OutDir: dir}); err == nil || !strings.Contains(err.Error(), "are for kernel 5.10.0") {
		t.Errorf("modules of another kernel: got %v", err)
	}
}
