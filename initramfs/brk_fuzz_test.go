package initramfs

import (
	"os"
	"path/filepath"
	"testing"
)

func FuzzBrkPKCS7(f *testing.F) {
	b, _ := os.ReadFile("/boot/vmlinuz-6.1.0-57-amd64")
	if len(b) > 0 {
		// seed: the signature blob
		f.Add(b[len(b)-2000:])
	}
	f.Add([]byte{0x30, 0x03, 0x06, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, d []byte) { pkcs7Certificates(d) })
}

func FuzzBrkPE(f *testing.F) {
	b, _ := os.ReadFile("/usr/lib/shim/mmx64.efi.signed")
	f.Add(b)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, d []byte) {
		p := filepath.Join(dir, "x")
		os.WriteFile(p, d, 0o644)
		AuthenticodeSigners(p)
		ShimVendorCert(p)
	})
}
