package initramfs

import (
	"context"
	"debug/pe"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// BRK: tampered Debian-signed kernel (one byte of .text flipped).
func brkTampered(t *testing.T, kernel string) string {
	b, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := pe.Open(kernel)
	s := f.Section(".text")
	off := int(s.Offset) + int(s.Size)/2
	f.Close()
	b[off] ^= 0xff
	p := filepath.Join(t.TempDir(), "vmlinuz-tampered")
	os.WriteFile(p, b, 0o644)
	return p
}

func TestBrkTamperedWithSbverify(t *testing.T) {
	kernel, chain := signedKernel(t)
	p := brkTampered(t, kernel)
	sb := CheckSecureBoot(context.Background(), chain, nil, p)
	t.Logf("with sbverify: %s", sb)
	if sb.Boots {
		t.Errorf("tampered kernel said yes")
	}
}

func TestBrkTamperedNoSbverify(t *testing.T) {
	kernel, chain := signedKernel(t)
	p := brkTampered(t, kernel)
	t.Setenv("PATH", t.TempDir())
	sb := CheckSecureBoot(context.Background(), chain, nil, p)
	t.Logf("without sbverify: %s", sb)
	if sb.Boots {
		t.Errorf("BRK: tampered kernel (shim refuses: hash mismatch) said %q", sb)
	}
}

// BRK: a PE whose security directory claims 4 GiB.
func TestBrkHugeSecurityDir(t *testing.T) {
	kernel, _ := signedKernel(t)
	b, _ := os.ReadFile(kernel)
	peoff := binary.LittleEndian.Uint32(b[0x3c:])
	opt := int(peoff) + 24
	// PE32+: data directories at opt+112; security is entry 4
	sec := opt + 112 + 4*8
	binary.LittleEndian.PutUint32(b[sec+4:], 0xfffffff0)
	p := filepath.Join(t.TempDir(), "huge")
	os.WriteFile(p, b, 0o644)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	_, err := AuthenticodeSigners(p)
	runtime.ReadMemStats(&m1)
	t.Logf("err %v; TotalAlloc grew %d MiB", err, (m1.TotalAlloc-m0.TotalAlloc)>>20)
	if m1.TotalAlloc-m0.TotalAlloc > 100<<20 {
		t.Errorf("BRK: allocated %d MiB for a crafted security directory size", (m1.TotalAlloc-m0.TotalAlloc)>>20)
	}
}

// BRK: kernel with Debian's valid signature first and a second signature by another key.
func TestBrkTwoSignatures(t *testing.T) {
	kernel, chain := signedKernel(t)
	d := t.TempDir()
	run := func(name string, a ...string) {
		if out, err := exec.Command(name, a...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, a, err, out)
		}
	}
	run("openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=Evil", "-keyout", d+"/k.pem", "-out", d+"/c.pem", "-days", "30")
	// evil-only signature over the stripped kernel
	un := d + "/un"
	copyFile(un, kernel)
	run("sbattach", "--remove", un)
	run("sbsign", "--key", d+"/k.pem", "--cert", d+"/c.pem", "--output", d+"/evil", un)
	sb := CheckSecureBoot(context.Background(), chain, nil, d+"/evil")
	t.Logf("evil only: %s", sb)
	// osslsigncode nest: Debian first, evil appended
	run("osslsigncode", "sign", "-nest", "-certs", d+"/c.pem", "-key", d+"/k.pem", "-in", kernel, "-out", d+"/two")
	sb = CheckSecureBoot(context.Background(), chain, nil, d+"/two")
	t.Logf("debian+nested evil: %s", sb)
}

// BRK: shim/GRUB themselves are never checked: unsigned copies of the
// chain still give "yes".
func TestBrkUnsignedChainSaysYes(t *testing.T) {
	kernel, chain := signedKernel(t)
	d := t.TempDir()
	for _, f := range []string{chain.GRUB, chain.GRUBCD, chain.GRUBNet} {
		dst := filepath.Join(d, filepath.Base(f))
		copyFile(dst, f)
		if out, err := exec.Command("sbattach", "--remove", dst).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	old := SignedGRUBDir
	SignedGRUBDir = d
	defer func() { SignedGRUBDir = old }()
	o := BootOptions{Format: FormatUSB, Kernel: kernel, SecureBoot: SecureBootRequire}
	sb, err := signedChain(context.Background(), &o)
	t.Logf("unsigned GRUB: %v %s", err, sb)
	if sb.Boots {
		t.Errorf("BRK: GRUB without a signature (shim refuses it) -> %q", sb)
	}
}

func TestBrkTrailingData(t *testing.T) {
	_, chain := signedKernel(t)
	sb := CheckSecureBoot(context.Background(), chain, nil, "/tmp/brk/k-junk")
	t.Logf("kernel + 4 KiB after the certificate table: %s", sb)
}
