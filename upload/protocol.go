// Package upload sends snapshots to the lab server ('rewind serve') and
// receives them there. Both ends of the protocol live here:
//
//   - Client is a snapshot.Sink: a capture hands it its frames in chunk
//     order and commits the manifest last. A dropped connection or a 5xx
//     answer is retried with backoff; the client asks the server what it
//     holds and resumes from there.
//   - Receiver is the server's http.Handler (mounted at /upload/): it checks
//     the token, every frame's SHA-256 as it arrives and that it continues
//     its segment, then at commit the whole manifest against what it
//     recorded, signs it when configured, writes it last and publishes the
//     snapshot atomically as NAME/<generation> with NAME/latest naming it.
//
// The snapshot URL http://host/snapshots/pc1 uploads through
// http://host/upload/snapshots/pc1:
//
//	POST   NAME                        create a session: JSON {overwrite, generation} -> 201 {session, generation}
//	GET    NAME?session=ID             what the server holds: {chunks, segments: [{name, size}], published}
//	PUT    NAME?session=ID&chunk=I&segment=S&name=data.000&offset=O
//	                                   one frame; X-Rewind-SHA256 is its hash, the body its bytes
//	PUT    NAME?session=ID&commit=1    the manifest's bytes; X-Rewind-Signature the signature file, base64
//	DELETE NAME?session=ID             drop the session (the capture failed)
//
// Every request carries "Authorization: Bearer TOKEN" (rewind serve
// --upload-token).
package upload

import (
	"errors"
	"fmt"
	"strings"

	"github.com/rewind-bmr/rewind/internal/labtoken"
	"github.com/rewind-bmr/rewind/snapshot"
)

// Protocol headers and query keys.
const (
	headerSHA256    = "X-Rewind-SHA256"
	headerSignature = "X-Rewind-Signature"
	// Prefix is the path under which the lab server receives uploads.
	Prefix = "/upload"
	// Latest is the name of the symbolic link to a name's newest generation.
	Latest = snapshot.LatestName
	// GenerationLayout is the form of a generation's name: the capture's
	// start time, UTC, to the second.
	GenerationLayout = snapshot.GenerationLayout
	// MaxNameDepth bounds the path elements of an upload's name.
	MaxNameDepth = 8
	// maxElement bounds one path element of a name.
	maxElement = 128
	// maxSegmentName bounds a segment's file name.
	maxSegmentName = 64
	// maxCreateBody bounds the JSON of a session request.
	maxCreateBody = 4 << 10
)

// MaxFrame is the largest frame body a server accepts: the LZ4 frame of
// the largest chunk.
var MaxFrame = int64(snapshot.FrameBound(snapshot.MaxChunkSize))

// createRequest opens a session.
type createRequest struct {
	Overwrite  bool   `json:"overwrite"`
	Generation string `json:"generation,omitempty"`
}

// createResponse answers createRequest.
type createResponse struct {
	Session    string `json:"session"`
	Generation string `json:"generation"`
}

// segmentStatus is one segment the server holds.
type segmentStatus struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// statusResponse is what the server holds of a session.
type statusResponse struct {
	Chunks    int             `json:"chunks"` // frames stored: chunks 0..Chunks-1
	Segments  []segmentStatus `json:"segments"`
	Published string          `json:"published,omitempty"` // NAME/<generation> once committed
}

// commitResponse answers a commit.
type commitResponse struct {
	Published string `json:"published"` // NAME/<generation>
	Signed    bool   `json:"signed"`    // the server signed the manifest
}

// Errors a Client's errors wrap, by the server's answer.
var (
	// ErrUnauthorized: the token is missing or wrong (401).
	ErrUnauthorized = errors.New("the lab server refused the upload token")
	// ErrUploadsOff: the server takes no uploads (403).
	ErrUploadsOff = errors.New("the lab server takes no uploads")
	// ErrExists: the name exists and the plan does not allow another
	// generation, or is not a generations directory (409).
	ErrExists = errors.New("the snapshot name exists on the lab server")
	// ErrNoSpace: the server's disk is full (507).
	ErrNoSpace = errors.New("the lab server has no space left")
	// ErrRefused: the server refused a frame or the manifest (4xx): the
	// session failed and nothing was published.
	ErrRefused = errors.New("the lab server refused the upload")
)

// CheckName checks an upload's name, the path of the snapshot URL: 1 to
// MaxNameDepth elements of letters, digits, '.', '_' and '-', none
// starting with a dot nor named latest (the link to a name's newest
// generation), not under reports/ or upload/ (the server's own).
func CheckName(name string) error {
	if name == "" {
		return errors.New("the snapshot URL has no path: name the snapshot, as in http://host/snapshots/pc1")
	}
	parts := strings.Split(name, "/")
	if len(parts) > MaxNameDepth {
		return fmt.Errorf("snapshot name %q has %d path elements; at most %d", name, len(parts), MaxNameDepth)
	}
	for _, p := range parts {
		if err := checkElement(p); err != nil {
			return fmt.Errorf("snapshot name %q: %w", name, err)
		}
	}
	for _, p := range parts {
		if p == Latest {
			return fmt.Errorf("snapshot name %q has an element %q, which names the newest generation for restores: a capture uploads to the name without it (as http://host/snapshots/pc1), and overwrite = true adds a generation", name, Latest)
		}
	}
	switch parts[0] {
	case "reports", strings.TrimPrefix(Prefix, "/"):
		return fmt.Errorf("snapshot name %q is under %s/, which the lab server keeps for itself: choose another path", name, parts[0])
	}
	return nil
}

func checkElement(p string) error {
	switch {
	case p == "":
		return errors.New("empty path element (a doubled or trailing '/')")
	case len(p) > maxElement:
		return fmt.Errorf("path element of %d bytes; at most %d", len(p), maxElement)
	case p[0] == '.':
		return fmt.Errorf("path element %q starts with a dot (such names are never served)", p)
	}
	for _, c := range []byte(p) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("path element %q has a character other than letters, digits, '.', '_' and '-'", p)
		}
	}
	return nil
}

// CheckGeneration checks a generation's name: GenerationLayout exactly.
func CheckGeneration(gen string) error {
	if !snapshot.IsGeneration(gen) {
		return fmt.Errorf("generation %q is not a UTC time of the form %s", gen, GenerationLayout)
	}
	return nil
}

// isGeneration reports whether a directory entry's name is a generation.
func isGeneration(name string) bool { return CheckGeneration(name) == nil }

// checkSegmentName accepts the file name of a segment: what a snapshot
// manifest allows, not starting with a dot (never served) nor naming the
// manifest or signature.
func checkSegmentName(name string) error {
	switch {
	case name == "" || len(name) > maxSegmentName:
		return fmt.Errorf("segment name of %d bytes; want 1 to %d", len(name), maxSegmentName)
	case name[0] == '.' || strings.HasPrefix(name, "manifest"):
		return fmt.Errorf("segment name %q starts with a dot or names the manifest", name)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("segment name %q has a character other than a-z, 0-9, '.', '-' and '_'", name)
		}
	}
	return nil
}

// CheckToken checks a lab upload token: 16 to 1024 characters of the
// bearer token alphabet (letters, digits and -._~+/=), so that 'openssl
// rand -hex 32' makes one. The error never contains the token.
func CheckToken(tok string) error { return labtoken.Check("upload token", tok) }

// ReadToken reads a lab upload token from a file (rewind serve
// --upload-token): the token, surrounding white space ignored.
func ReadToken(path string) (string, error) { return labtoken.Read("upload token", path) }
