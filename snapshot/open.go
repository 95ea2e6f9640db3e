package snapshot

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
)

// OpenOptions controls Open.
type OpenOptions struct {
	// Trust lists the public keys a signed manifest must verify against.
	// When set, unsigned or wrongly signed snapshots are refused.
	Trust      []ed25519.PublicKey
	HTTPClient *http.Client
}

// Snapshot is an opened snapshot: its manifest and a way to read its frames.
type Snapshot struct {
	Location string
	Manifest *Manifest
	ID       string // SHA-256 of manifest.json
	Signed   bool
}

// Open opens the snapshot at location: a directory or an http(s) URL.
func Open(ctx context.Context, location string, opts OpenOptions) (*Snapshot, error) {
	return nil, errors.New("snapshot: open not implemented yet")
}
