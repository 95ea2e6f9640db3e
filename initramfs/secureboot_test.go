package initramfs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// signedKernel returns Debian's signed kernel and the installed chain, or
// skips.
func signedKernel(t *testing.T) (string, *SignedChain) {
	t.Helper()
	chain, err := FindSignedChain()
	if err != nil {
		t.Skip(err)
	}
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(ks) == 0 {
		t.Skip("no kernel in /boot")
	}
	return ks[len(ks)-1], chain
}

func TestCheckSecureBootSignedKernel(t *testing.T) {
	kernel, chain := signedKernel(t)
	sb := CheckSecureBoot(context.Background(), chain, nil, kernel)
	if !sb.Boots || !sb.Chain {
		t.Fatalf("%s: %+v, want it to boot under Secure Boot", kernel, sb)
	}
	t.Logf("secure boot  %s", sb)
	if !strings.Contains(sb.String(), "Debian Secure Boot") {
		t.Errorf("line %q does not name the signer", sb)
	}
}

func TestCheckSecureBootUnsignedKernel(t *testing.T) {
	kernel, chain := signedKernel(t)
	if _, err := exec.LookPath("sbattach"); err != nil {
		t.Skip("sbattach is not installed (sbsigntool; scripts/setup.sh)")
	}
	unsigned := filepath.Join(t.TempDir(), "vmlinuz")
	if err := copyFile(unsigned, kernel); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sbattach", "--remove", unsigned).CombinedOutput(); err != nil {
		t.Fatalf("sbattach --remove: %v\n%s", err, out)
	}
	if _, err := AuthenticodeSigners(unsigned); !errors.Is(err, ErrUnsigned) {
		t.Errorf("AuthenticodeSigners(stripped %s): %v, want ErrUnsigned", kernel, err)
	}
	sb := CheckSecureBoot(context.Background(), chain, nil, unsigned)
	if sb.Boots || !strings.HasPrefix(sb.String(), "no: ") || !strings.Contains(sb.Why, "not signed") {
		t.Errorf("stripped kernel: %q, want no: ... not signed", sb)
	}
}

// A kernel signed by a key shim does not carry (here: shim itself is
// signed by Microsoft, not Debian) is refused with the signer named.
func TestCheckSecureBootOtherSigner(t *testing.T) {
	_, chain := signedKernel(t)
	sb := CheckSecureBoot(context.Background(), chain, nil, chain.Shim)
	if sb.Boots || !strings.Contains(sb.Why, "Microsoft") || !strings.Contains(sb.Why, "not by a key shim trusts") {
		t.Errorf("image signed by Microsoft: %q, want no: ... not by a key shim trusts, naming the signer", sb)
	}
}

func TestCheckSecureBootWithoutChain(t *testing.T) {
	err := errors.New("the signed boot loaders are not installed: shim-signed")
	if sb := CheckSecureBoot(context.Background(), nil, err, "/nonexistent"); sb.Boots || sb.Chain || !strings.Contains(sb.String(), "no: the signed boot loaders are not installed") {
		t.Errorf("without the chain: %q", sb)
	}
	if sb := CheckSecureBoot(context.Background(), nil, nil, "/nonexistent"); sb.Boots || !strings.Contains(sb.Why, "--secure-boot off") {
		t.Errorf("--secure-boot off: %q", sb)
	}
}

func TestFindSignedChainMissing(t *testing.T) {
	old := ShimDir
	ShimDir = t.TempDir()
	defer func() { ShimDir = old }()
	_, err := FindSignedChain()
	if err == nil || !strings.Contains(err.Error(), "shim-signed") || !strings.Contains(err.Error(), "shim-helpers-amd64-signed") {
		t.Errorf("FindSignedChain without shim: %v, want the missing packages named", err)
	}
}

func TestAuthenticodeNotPE(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bzImage")
	os.WriteFile(p, []byte("not a PE image at all, just bytes"), 0o644)
	if _, err := AuthenticodeSigners(p); err == nil || !strings.Contains(err.Error(), "not an EFI image") {
		t.Errorf("AuthenticodeSigners(garbage): %v, want not an EFI image", err)
	}
}

// What BuildBoot says for each --secure-boot mode, with the packages
// installed or not.
func TestSignedChainModes(t *testing.T) {
	kernel, _ := signedKernel(t)
	ctx := context.Background()
	for _, tc := range []struct {
		mode, format string
		missing      bool
		boots        bool
		chain        bool
		want         string // in the line, or the error
	}{
		{SecureBootAuto, FormatUSB, false, true, true, "yes: shim (Microsoft UEFI CA) -> GRUB -> kernel signed by"},
		{"", FormatISO, false, true, true, "yes: "},
		{SecureBootAuto, FormatPXE, false, true, true, "yes: UEFI clients boot shimx64.efi"},
		{SecureBootOff, FormatUSB, false, false, false, "no: the boot loader is GRUB built here"},
		{SecureBootAuto, FormatUSB, true, false, false, "no: the signed boot loaders are not installed: shim-signed"},
		{SecureBootRequire, FormatUSB, true, false, false, "--secure-boot require: the signed boot loaders are not installed"},
		{SecureBootAuto, FormatInitramfs, false, false, false, "depends on your boot loader: kernel /boot/vmlinuz-"},
		{"sometimes", FormatUSB, false, false, false, `--secure-boot "sometimes"`},
	} {
		old := ShimDir
		if tc.missing {
			ShimDir = t.TempDir()
		}
		o := BootOptions{Format: tc.format, Kernel: kernel, SecureBoot: tc.mode}
		sb, err := signedChain(ctx, &o)
		ShimDir = old
		got := sb.String()
		if err != nil {
			got = err.Error()
		}
		if sb.Boots != tc.boots || (o.chain != nil) != tc.chain || !strings.Contains(got, tc.want) {
			t.Errorf("--secure-boot %q --format %s (packages missing: %v): boots %v, chain %v, %q; want boots %v, chain %v, %q",
				tc.mode, tc.format, tc.missing, sb.Boots, o.chain != nil, got, tc.boots, tc.chain, tc.want)
		}
	}
}
