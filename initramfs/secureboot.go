package initramfs

// The Secure Boot chain of the ISO, USB and PXE media: the firmware starts
// Debian's shim (signed by Microsoft's UEFI CA), shim starts Debian's
// signed GRUB (Debian's key, which shim carries as its vendor certificate),
// and GRUB has shim check the kernel. The chain comes from Debian packages:
//
//	shim-signed                /usr/lib/shim/shimx64.efi.signed
//	shim-helpers-amd64-signed  /usr/lib/shim/mmx64.efi.signed (MokManager)
//	grub-efi-amd64-signed      /usr/lib/grub/x86_64-efi-signed/{grubx64,gcdx64,grubnetx64}.efi.signed
//
// Debian's signed GRUB images carry their modules and read their
// configuration from fixed places (docs/media.md): grubx64 from
// /EFI/debian/grub.cfg on its own partition, gcdx64 from /boot/grub/grub.cfg
// of the file system holding /.disk/info, grubnetx64 from grub/grub.cfg on
// the TFTP server.

import (
	"bytes"
	"context"
	"crypto/x509"
	"debug/pe"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Secure Boot modes of 'rewind media build --secure-boot'.
const (
	SecureBootAuto    = "auto"    // the signed chain when its packages are installed, else GRUB built here
	SecureBootRequire = "require" // the signed chain, or the build fails
	SecureBootOff     = "off"     // GRUB built here with grub-mkimage (unsigned)
)

// ShimDir and SignedGRUBDir hold the signed boot loaders (a test points
// ShimDir elsewhere to see the packages missing).
var (
	ShimDir       = "/usr/lib/shim"
	SignedGRUBDir = "/usr/lib/grub/x86_64-efi-signed"
)

// SignedChain is the paths of the signed EFI boot loaders.
type SignedChain struct {
	Shim       string // shimx64.efi.signed: the firmware starts it as BOOTX64.EFI
	MokManager string // mmx64.efi.signed: shim starts it to enroll a MOK
	GRUB       string // grubx64.efi.signed: disks (the USB image)
	GRUBCD     string // gcdx64.efi.signed: the ISO
	GRUBNet    string // grubnetx64.efi.signed: PXE
}

// FindSignedChain returns the signed boot loaders, or an error naming the
// packages that are missing.
func FindSignedChain() (*SignedChain, error) {
	c := &SignedChain{
		Shim:       filepath.Join(ShimDir, "shimx64.efi.signed"),
		MokManager: filepath.Join(ShimDir, "mmx64.efi.signed"),
		GRUB:       filepath.Join(SignedGRUBDir, "grubx64.efi.signed"),
		GRUBCD:     filepath.Join(SignedGRUBDir, "gcdx64.efi.signed"),
		GRUBNet:    filepath.Join(SignedGRUBDir, "grubnetx64.efi.signed"),
	}
	var missing []string
	for _, f := range []struct{ path, pkg string }{
		{c.Shim, "shim-signed"}, {c.MokManager, "shim-helpers-amd64-signed"},
		{c.GRUB, "grub-efi-amd64-signed"}, {c.GRUBCD, "grub-efi-amd64-signed"}, {c.GRUBNet, "grub-efi-amd64-signed"},
	} {
		if _, err := os.Stat(f.path); err != nil && !strings.Contains(strings.Join(missing, " "), f.pkg) {
			missing = append(missing, fmt.Sprintf("%s (no %s)", f.pkg, f.path))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the signed boot loaders are not installed: %s; scripts/setup.sh installs them", strings.Join(missing, ", "))
	}
	return c, nil
}

// SecureBoot is what a build says about Secure Boot.
type SecureBoot struct {
	Chain bool   // the medium starts shim and Debian's signed GRUB
	Boots bool   // it will boot with Secure Boot on (firmware with Microsoft's UEFI CA)
	Why   string // the reason, for the line 'media build' prints
	// External: the medium's boot loader is not the build's (--format
	// initramfs), so only the kernel's signature is known.
	External bool
}

// String is the line 'rewind media build' prints after "secure boot".
func (s SecureBoot) String() string {
	if s.External {
		return "depends on your boot loader: " + s.Why
	}
	if s.Boots {
		return "yes: " + s.Why
	}
	return "no: " + s.Why
}

// CheckSecureBoot says whether a medium with the chain (nil: GRUB built
// here) and kernel boots under Secure Boot: shim must trust the kernel's
// signer, which it does when the signature chains to shim's vendor
// certificate (Debian's kernels). A kernel signed with the lab's own key
// boots only once that key is enrolled (MOK), which the build cannot see.
func CheckSecureBoot(ctx context.Context, chain *SignedChain, chainErr error, kernel string) SecureBoot {
	if chain == nil {
		why := "the boot loader is GRUB built here, unsigned (--secure-boot off)"
		if chainErr != nil {
			why = chainErr.Error()
		}
		return SecureBoot{Why: why}
	}
	sb := SecureBoot{Chain: true}
	vendor, err := ShimVendorCert(chain.Shim)
	if err != nil {
		sb.Why = err.Error()
		return sb
	}
	if err := checkChain(ctx, chain, vendor); err != nil {
		sb.Why = err.Error()
		return sb
	}
	signers, err := AuthenticodeSigners(kernel)
	if err != nil {
		sb.Why = fmt.Sprintf("kernel %s: %v; shim refuses it (sign it with sbsign, docs/media.md)", kernel, err)
		return sb
	}
	var names []string
	for _, c := range signers {
		names = append(names, c.Subject.CommonName)
		if bytes.Equal(c.Raw, vendor.Raw) || c.CheckSignatureFrom(vendor) == nil {
			if err := sbverify(ctx, kernel, vendor); err != nil {
				sb.Why = fmt.Sprintf("kernel %s: %v", kernel, err)
				return sb
			}
			sb.Boots = true
			sb.Why = fmt.Sprintf("shim (Microsoft UEFI CA) -> GRUB -> kernel signed by %q, which shim trusts (%s)", c.Subject.CommonName, vendor.Subject.CommonName)
			return sb
		}
	}
	sb.Why = fmt.Sprintf("kernel %s is signed by %s, not by a key shim trusts (%s); it boots only where that key is enrolled as a MOK (docs/media.md)",
		kernel, strings.Join(quoted(names), ", "), vendor.Subject.CommonName)
	return sb
}

func quoted(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}

// checkChain checks the chain's own links: shim signed under Microsoft's
// UEFI CA, and each signed GRUB image by shim's vendor certificate, the
// signature over the file verified by sbverify.
func checkChain(ctx context.Context, c *SignedChain, vendor *x509.Certificate) error {
	certs, err := AuthenticodeSigners(c.Shim)
	if err != nil {
		return fmt.Errorf("shim %s: %v", c.Shim, err)
	}
	microsoft := false
	for _, cert := range certs {
		if strings.Contains(cert.Subject.CommonName, "Microsoft Corporation UEFI CA") || strings.Contains(cert.Issuer.CommonName, "Microsoft Corporation UEFI CA") {
			microsoft = true
		}
	}
	if !microsoft {
		return fmt.Errorf("shim %s is not signed under Microsoft's UEFI CA: firmware with Microsoft's keys refuses it", c.Shim)
	}
	for _, g := range []string{c.GRUB, c.GRUBCD, c.GRUBNet, c.MokManager} {
		certs, err := AuthenticodeSigners(g)
		if err != nil {
			return fmt.Errorf("%s: %v; shim refuses it", g, err)
		}
		ok := false
		for _, cert := range certs {
			if bytes.Equal(cert.Raw, vendor.Raw) || cert.CheckSignatureFrom(vendor) == nil {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("%s is not signed by shim's vendor certificate (%s); shim refuses it", g, vendor.Subject.CommonName)
		}
		if err := sbverify(ctx, g, vendor); err != nil {
			return fmt.Errorf("%s: %v", g, err)
		}
	}
	return nil
}

// ModuleSignature ends a kernel module signed for the kernel's keyring.
const ModuleSignature = "~Module signature appended~\n"

// UnsignedModules returns the module files among paths that carry no
// signature (a locked-down kernel refuses them), and the compressed ones
// it cannot look into.
func UnsignedModules(paths []string) (unsigned, unchecked []string, err error) {
	for _, p := range paths {
		if !strings.HasSuffix(p, ".ko") {
			unchecked = append(unchecked, filepath.Base(p))
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, nil, err
		}
		fi, err := f.Stat()
		tail := make([]byte, len(ModuleSignature))
		if err == nil && fi.Size() >= int64(len(tail)) {
			_, err = f.ReadAt(tail, fi.Size()-int64(len(tail)))
		}
		f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		if string(tail) != ModuleSignature {
			unsigned = append(unsigned, filepath.Base(p))
		}
	}
	return unsigned, unchecked, nil
}

// ErrNoSbverify: without sbverify the signature over an image is not
// checked, so the build cannot say it boots.
var ErrNoSbverify = errors.New("sbverify (package sbsigntool) is not installed, so the signature over it was not checked: install sbsigntool (scripts/setup.sh does)")

// sbverify checks an image's signature over its contents against the
// vendor certificate with sbverify (sbsigntool); the Go check above sees
// only who signed. Without sbverify it fails (ErrNoSbverify).
func sbverify(ctx context.Context, kernel string, vendor *x509.Certificate) error {
	if _, err := exec.LookPath("sbverify"); err != nil {
		return ErrNoSbverify
	}
	f, err := os.CreateTemp("", "rewind-vendor-*.pem")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	pem.Encode(f, &pem.Block{Type: "CERTIFICATE", Bytes: vendor.Raw})
	if err := f.Close(); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "sbverify", "--cert", f.Name(), kernel).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sbverify: its signature does not verify (%s)", strings.TrimSpace(string(out)))
	}
	return nil
}

// ErrUnsigned is returned by AuthenticodeSigners for an EFI image
// without a signature.
var ErrUnsigned = errors.New("not signed (no Authenticode signature)")

// AuthenticodeSigners returns the certificates in the Authenticode
// signatures of the PE image at path (an EFI kernel or boot loader):
// every certificate each signature carries, the signer's first.
func AuthenticodeSigners(path string) ([]*x509.Certificate, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := pe.NewFile(f)
	if err != nil {
		return nil, fmt.Errorf("not an EFI image: %v", err)
	}
	var dir pe.DataDirectory
	switch h := p.OptionalHeader.(type) {
	case *pe.OptionalHeader64:
		if h.NumberOfRvaAndSizes > pe.IMAGE_DIRECTORY_ENTRY_SECURITY {
			dir = h.DataDirectory[pe.IMAGE_DIRECTORY_ENTRY_SECURITY]
		}
	case *pe.OptionalHeader32:
		if h.NumberOfRvaAndSizes > pe.IMAGE_DIRECTORY_ENTRY_SECURITY {
			dir = h.DataDirectory[pe.IMAGE_DIRECTORY_ENTRY_SECURITY]
		}
	default:
		return nil, errors.New("not an EFI image: no optional header")
	}
	if dir.Size == 0 {
		return nil, ErrUnsigned
	}
	// The security directory's address is a file offset: a list of
	// WIN_CERTIFICATE (length, revision, type), each 8-byte aligned.
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if int64(dir.VirtualAddress)+int64(dir.Size) > fi.Size() {
		return nil, fmt.Errorf("not a valid signed EFI image: its signature table (%d bytes at %d) ends past the file's %d bytes", dir.Size, dir.VirtualAddress, fi.Size())
	}
	table := make([]byte, dir.Size)
	if _, err := f.ReadAt(table, int64(dir.VirtualAddress)); err != nil {
		return nil, fmt.Errorf("reading the signature table at %d: %v", dir.VirtualAddress, err)
	}
	var certs []*x509.Certificate
	for len(table) >= 8 {
		n := binary.LittleEndian.Uint32(table)
		typ := binary.LittleEndian.Uint16(table[6:])
		if n < 8 || int(n) > len(table) {
			return nil, fmt.Errorf("signature table: an entry of %d bytes in %d", n, len(table))
		}
		if typ == 2 { // WIN_CERT_TYPE_PKCS_SIGNED_DATA
			c, err := pkcs7Certificates(table[8:n])
			if err != nil {
				return nil, fmt.Errorf("signature: %v", err)
			}
			certs = append(certs, c...)
		}
		table = table[min(len(table), int(n+7)&^7):]
	}
	if len(certs) == 0 {
		return nil, ErrUnsigned
	}
	return certs, nil
}

// pkcs7Certificates returns the certificates of a PKCS #7 SignedData
// (RFC 2315), the signer's first.
func pkcs7Certificates(der []byte) ([]*x509.Certificate, error) {
	var ci struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"explicit,tag:0"`
	}
	if _, err := asn1.Unmarshal(der, &ci); err != nil {
		return nil, err
	}
	if !ci.ContentType.Equal(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}) {
		return nil, fmt.Errorf("content type %v, want PKCS #7 signed data", ci.ContentType)
	}
	var sd struct {
		Version          int
		DigestAlgorithms asn1.RawValue
		ContentInfo      asn1.RawValue
		Certificates     asn1.RawValue `asn1:"optional,tag:0"`
		CRLs             asn1.RawValue `asn1:"optional,tag:1"`
		SignerInfos      []struct {
			Version         int
			IssuerAndSerial struct {
				Issuer asn1.RawValue
				Serial asn1.RawValue
			}
			DigestAlgorithm     asn1.RawValue
			AuthenticatedAttrs  asn1.RawValue `asn1:"optional,tag:0"`
			DigestEncryptionAlg asn1.RawValue
			EncryptedDigest     []byte
			Unauthenticated     asn1.RawValue `asn1:"optional,tag:1"`
		} `asn1:"set"`
	}
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		return nil, err
	}
	certs, err := x509.ParseCertificates(sd.Certificates.Bytes)
	if err != nil {
		return nil, err
	}
	if len(sd.SignerInfos) == 0 {
		return nil, errors.New("no signer")
	}
	// The signer's certificate first.
	s := sd.SignerInfos[0].IssuerAndSerial
	for i, c := range certs {
		if bytes.Equal(c.RawIssuer, s.Issuer.FullBytes) && bytes.Equal(serialBytes(c), s.Serial.FullBytes) {
			certs[0], certs[i] = certs[i], certs[0]
			break
		}
	}
	return certs, nil
}

func serialBytes(c *x509.Certificate) []byte {
	b, _ := asn1.Marshal(c.SerialNumber)
	return b
}

// ShimVendorCert returns the certificate shim trusts besides the
// firmware's db and the MOK list: its .vendor_cert section (Debian's
// Secure Boot CA in Debian's shim).
func ShimVendorCert(shim string) (*x509.Certificate, error) {
	p, err := pe.Open(shim)
	if err != nil {
		return nil, fmt.Errorf("shim %s: %v", shim, err)
	}
	defer p.Close()
	s := p.Section(".vendor_cert")
	if s == nil {
		return nil, fmt.Errorf("shim %s has no .vendor_cert section", shim)
	}
	b, err := io.ReadAll(s.Open())
	if err != nil {
		return nil, err
	}
	// struct cert_table: authorized size, deauthorized size, authorized
	// offset, deauthorized offset (from the section's start).
	if len(b) < 16 {
		return nil, fmt.Errorf("shim %s: .vendor_cert is %d bytes", shim, len(b))
	}
	size, off := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[8:])
	if size == 0 || uint64(off)+uint64(size) > uint64(len(b)) {
		return nil, fmt.Errorf("shim %s carries no vendor certificate", shim)
	}
	c, err := x509.ParseCertificate(b[off : off+size])
	if err != nil {
		return nil, fmt.Errorf("shim %s: vendor certificate: %v", shim, err)
	}
	return c, nil
}
