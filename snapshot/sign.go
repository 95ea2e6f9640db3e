package snapshot

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Key file headers: a key file is one line, "HEADER BASE64".
const (
	privateKeyHeader = "rewind-ed25519-private"
	publicKeyHeader  = "rewind-ed25519-public"
	signatureHeader  = "rewind-ed25519-signature"
)

// ErrSignature is wrapped by every signature verification failure.
var ErrSignature = errors.New("snapshot signature check failed")

// GenerateKey writes NAME.key (mode 0600) and NAME.pub for a new ed25519
// key pair. It refuses to overwrite an existing key.
func GenerateKey(name string) (privPath, pubPath string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	privPath, pubPath = name+".key", name+".pub"
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Stat(p); err == nil {
			return "", "", fmt.Errorf("%s already exists: refusing to overwrite a key", p)
		}
	}
	priv64 := base64.StdEncoding.EncodeToString(priv.Seed())
	if err := os.WriteFile(privPath, []byte(privateKeyHeader+" "+priv64+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("write private key: %w", err)
	}
	pub64 := base64.StdEncoding.EncodeToString(pub)
	if err := os.WriteFile(pubPath, []byte(publicKeyHeader+" "+pub64+"\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("write public key: %w", err)
	}
	return privPath, pubPath, nil
}

// LoadPrivateKey reads a key file written by GenerateKey.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	seed, err := readKeyFile(path, privateKeyHeader, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// LoadPublicKey reads a public key file written by GenerateKey.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := readKeyFile(path, publicKeyHeader, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	return ed25519.PublicKey(b), nil
}

// ParsePublicKey parses the contents of a public key file.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	b, err := decodeKeyLine(data, publicKeyHeader, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	return ed25519.PublicKey(b), nil
}

func readKeyFile(path, header string, size int) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	b, err := decodeKeyLine(data, header, size)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return b, nil
}

func decodeKeyLine(data []byte, header string, size int) ([]byte, error) {
	h, b64, ok := strings.Cut(strings.TrimSpace(string(data)), " ")
	if !ok || h != header {
		return nil, fmt.Errorf("not a %s file (it must start with %q)", header, header)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("malformed %s: want %d base64 bytes", header, size)
	}
	return b, nil
}

// EncodeSignature formats a manifest signature for manifest.json.sig.
func EncodeSignature(sig []byte) []byte {
	return []byte(signatureHeader + " " + base64.StdEncoding.EncodeToString(sig) + "\n")
}

// VerifySignature checks sigFile (the bytes of manifest.json.sig) over
// manifest against each trusted key and returns the index of the key that
// verified it.
func VerifySignature(manifest, sigFile []byte, trust []ed25519.PublicKey) (int, error) {
	sig, err := decodeKeyLine(sigFile, signatureHeader, ed25519.SignatureSize)
	if err != nil {
		return -1, fmt.Errorf("%w: %s: %v", ErrSignature, SignatureName, err)
	}
	for i, k := range trust {
		if ed25519.Verify(k, manifest, sig) {
			return i, nil
		}
	}
	return -1, fmt.Errorf("%w: %s does not match manifest.json under any trusted key: the manifest was modified or signed with another key", ErrSignature, SignatureName)
}

// KeyID is a short fingerprint of a public key for messages and reports.
func KeyID(k ed25519.PublicKey) string {
	return base64.RawURLEncoding.EncodeToString(bytes.Clone(k))[:11]
}
