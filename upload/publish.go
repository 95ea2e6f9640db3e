package upload

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/rewind-bmr/rewind/snapshot"
)

// commit checks the manifest against every frame recorded, writes the
// signature and the manifest, and publishes the snapshot.
func (r *Receiver) commit(w http.ResponseWriter, req *http.Request, s *session) {
	if req.ContentLength > snapshot.MaxManifestSize {
		r.failRefuse(w, req, s, http.StatusRequestEntityTooLarge, fmt.Sprintf("manifest of %d bytes; at most %d", req.ContentLength, int64(snapshot.MaxManifestSize)))
		return
	}
	var sig []byte
	if v := req.Header.Get(headerSignature); v != "" {
		b, err := base64.StdEncoding.DecodeString(v)
		if err == nil {
			err = checkSignatureFile(b)
		}
		if err != nil {
			r.failRefuse(w, req, s, http.StatusBadRequest, fmt.Sprintf("header %s: %v", headerSignature, err))
			return
		}
		sig = b
	}
	// A manifest holds about 300 bytes per chunk; unused ranges add less
	// than that again. The bound keeps a session from making the server
	// hold a gigabyte.
	limit := min(int64(snapshot.MaxManifestSize), 16<<20+1024*int64(len(s.chunks)))
	if req.ContentLength > limit {
		r.failRefuse(w, req, s, http.StatusRequestEntityTooLarge, fmt.Sprintf("manifest of %d bytes for %d chunks; at most %d", req.ContentLength, len(s.chunks), limit))
		return
	}
	data, err := r.readManifest(w, req, limit)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		r.failRefuse(w, req, s, http.StatusRequestEntityTooLarge, fmt.Sprintf("manifest of more than %d bytes for %d chunks", limit, len(s.chunks)))
		return
	}
	if err != nil {
		r.refuse(w, req, http.StatusRequestTimeout, "manifest body: "+err.Error()) // a cut connection: the client sends it again
		return
	}
	m, err := snapshot.ParseManifest(data)
	if err != nil {
		r.failRefuse(w, req, s, http.StatusBadRequest, "manifest: "+err.Error()+": nothing is published")
		return
	}
	if err := s.matches(m); err != nil {
		r.failRefuse(w, req, s, http.StatusBadRequest, err.Error()+": nothing is published")
		return
	}
	if r.cfg.SignKey != nil {
		if sig != nil {
			r.log.Info("upload: the client's signature is replaced by the server's", "session", s.id, "name", s.name)
		}
		sig = snapshot.EncodeSignature(ed25519.Sign(r.cfg.SignKey, data))
	}
	if err := r.finish(s, data, sig); err != nil {
		r.failRefuse(w, req, s, storageCode(err), fmt.Sprintf("store %s: %v; nothing is published", s.name, err))
		return
	}
	published, code, err := r.publishSession(s)
	if err != nil {
		r.failRefuse(w, req, s, code, err.Error())
		return
	}
	r.end(s, tombstone{published: published})
	r.log.Info("upload published", "session", s.id, "name", s.name, "published", published, "chunks", len(m.Chunks),
		"segments", len(m.Segments), "signed", sig != nil, "remote", s.remote)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(commitResponse{Published: published, Signed: r.cfg.SignKey != nil})
}

func (r *Receiver) readManifest(w http.ResponseWriter, req *http.Request, limit int64) ([]byte, error) {
	rc := http.NewResponseController(w)
	body := http.MaxBytesReader(w, req.Body, limit)
	var out bytes.Buffer
	buf := make([]byte, 1<<20)
	for {
		r.deadlines(rc)
		k, err := body.Read(buf)
		out.Write(buf[:k])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// checkSignatureFile accepts what EncodeSignature makes: one line, the
// signature header and 64 base64 bytes.
func checkSignatureFile(b []byte) error {
	head, _, _ := strings.Cut(string(snapshot.EncodeSignature(nil)), " ")
	h, b64, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if len(b) > snapshot.MaxSignatureSize || !ok || h != head {
		return fmt.Errorf("not a %s file", head)
	}
	if sig, err := base64.StdEncoding.DecodeString(b64); err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("malformed %s: want %d base64 bytes", head, ed25519.SignatureSize)
	}
	return nil
}

// matches checks m's segments and chunk index against what s recorded:
// every chunk's segment, offset, length and hash, its raw length, zero
// flag and raw hash (from the decoded frame), every segment's name and
// size. Only the chunk's disk offset is the client's word: Validate
// checked that the chunks tile the extents.
func (s *session) matches(m *snapshot.Manifest) error {
	if len(m.Segments) != len(s.segs) {
		return fmt.Errorf("the manifest names %d segments, the server holds %d", len(m.Segments), len(s.segs))
	}
	for i, g := range m.Segments {
		if g.Name != s.segs[i].name || g.Size != s.segs[i].size {
			return fmt.Errorf("the manifest's segment %d is %s of %d bytes, the server holds %s of %d bytes", i, g.Name, g.Size, s.segs[i].name, s.segs[i].size)
		}
	}
	if len(m.Chunks) != len(s.chunks) {
		return fmt.Errorf("the manifest names %d chunks, the server received %d", len(m.Chunks), len(s.chunks))
	}
	for i, c := range m.Chunks {
		rec := s.chunks[i]
		sum := hex.EncodeToString(rec.sum[:])
		if c.Segment != rec.seg || c.FrameOffset != rec.off || c.FrameLength != rec.length || c.SHA256 != sum {
			return fmt.Errorf("chunk %d: the manifest says %s at offset %d, %d bytes, sha256 %s; the server received %s at offset %d, %d bytes, sha256 %s",
				i, m.Segments[c.Segment].Name, c.FrameOffset, c.FrameLength, c.SHA256, s.segs[rec.seg].name, rec.off, rec.length, sum)
		}
		raw := rec.raw
		rawSum := hex.EncodeToString(raw.sum[:])
		switch {
		case c.Length != raw.length:
			return fmt.Errorf("chunk %d: the manifest says it holds %d raw bytes; its frame decodes to %d", i, c.Length, raw.length)
		case c.Zero && !raw.zero:
			return fmt.Errorf("chunk %d: the manifest marks it all-zero (a restore would write zeros without reading it); its frame holds data", i)
		case !c.Zero && raw.zero:
			return fmt.Errorf("chunk %d: the manifest marks it as data; its frame holds only zeros (a capture marks such chunks zero)", i)
		case c.RawSHA256 != "" && c.RawSHA256 != rawSum:
			return fmt.Errorf("chunk %d: the manifest says raw_sha256 %s; its frame decodes to bytes of sha256 %s", i, c.RawSHA256, rawSum)
		}
	}
	return nil
}

// finish makes the staging a complete snapshot on disk: the last segment
// flushed, the signature, then the manifest, then the directory flushed.
func (r *Receiver) finish(s *session, data, sig []byte) error {
	if err := r.closeSegment(s); err != nil {
		return err
	}
	if sig != nil {
		if err := r.writeFile(s.dir, snapshot.SignatureName, sig); err != nil {
			return err
		}
	}
	if err := r.writeFile(s.dir, snapshot.ManifestName, data); err != nil {
		return err
	}
	return r.syncDir(s.dir)
}

// writeFile writes dir/name through a temporary name, flushed.
func (r *Receiver) writeFile(dir, name string, data []byte) error {
	tmp := dir + "/." + name + ".tmp"
	f, err := r.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.root.Rename(tmp, dir+"/"+name)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func (r *Receiver) syncDir(dir string) error {
	d, err := r.root.Open(dir)
	if err != nil {
		return fmt.Errorf("flush directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("flush directory %s: %w", dir, err)
	}
	return nil
}

// publishSession moves the finished staging to NAME/<generation>, points
// NAME/latest at it and prunes old generations, one publication at a time.
func (r *Receiver) publishSession(s *session) (string, int, error) {
	r.publish.Lock()
	defer r.publish.Unlock()
	if code, err := r.checkTarget(s.name, s.gen, s.overwrite); err != nil {
		return "", code, fmt.Errorf("%w; nothing is published", err)
	}
	if err := r.root.MkdirAll(s.name, 0o755); err != nil {
		return "", storageCode(err), fmt.Errorf("create %s: %w", s.name, err)
	}
	final := s.name + "/" + s.gen
	if err := r.root.Rename(s.dir, final); err != nil {
		return "", storageCode(err), fmt.Errorf("publish %s: %w", final, err)
	}
	// From here the snapshot is complete under its generation's name; a
	// failure leaves it there, reachable by that name.
	tmp := s.name + "/.latest-" + s.id
	err := r.root.Symlink(s.gen, tmp)
	if err == nil {
		err = r.root.Rename(tmp, s.name+"/"+Latest)
	}
	if err == nil {
		// NAME and the directories MkdirAll may have made above it.
		dirs := []string{staging}
		for d := s.name; d != "."; d = path.Dir(d) {
			dirs = append(dirs, d)
		}
		for _, d := range append(dirs, ".") {
			err = errors.Join(err, r.syncDir(d))
		}
	}
	if err != nil {
		r.root.Remove(tmp)
		return "", storageCode(err), fmt.Errorf("%s was published but %s/%s could not be set to it: %w", final, s.name, Latest, err)
	}
	r.prune(s.name)
	return final, 0, nil
}

// prune removes the generations of name beyond the Keep newest, never the
// one latest names, and the temporary links of interrupted publications.
// The caller holds r.publish.
func (r *Receiver) prune(name string) {
	entries, err := r.readDir(name)
	if err != nil {
		r.log.Warn("upload: prune", "name", name, "err", err)
		return
	}
	latest, _ := r.root.Readlink(name + "/" + Latest)
	var gens []string
	for _, e := range entries {
		switch {
		case e.IsDir() && isGeneration(e.Name()):
			gens = append(gens, e.Name())
		case strings.HasPrefix(e.Name(), ".latest-") && e.Type()&fs.ModeSymlink != 0:
			// A temporary link of a publication that a kill interrupted:
			// publications are one at a time, so none is in use now.
			if err := r.root.Remove(name + "/" + e.Name()); err != nil {
				r.log.Warn("upload: remove a stale temporary link", "name", name, "link", e.Name(), "err", err)
			}
		}
	}
	slices.Sort(gens)
	slices.Reverse(gens)
	for i, g := range gens {
		if i < r.cfg.Keep || g == latest {
			continue
		}
		if err := r.root.RemoveAll(name + "/" + g); err != nil {
			r.log.Warn("upload: prune", "name", name, "generation", g, "err", err)
			continue
		}
		r.log.Info("upload: old generation removed", "name", name, "generation", g, "keep", r.cfg.Keep)
	}
}

// checkTarget refuses a name the upload could not be published under:
// inside a snapshot or a generations directory, through a symbolic link,
// a plain snapshot directory or something else that is not generations,
// or existing generations without overwrite, or the same generation.
func (r *Receiver) checkTarget(name, gen string, overwrite bool) (int, error) {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		dir := strings.Join(parts[:i], "/")
		fi, err := r.root.Lstat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return http.StatusInternalServerError, fmt.Errorf("%s: %w", dir, err)
		}
		if !fi.IsDir() {
			return http.StatusConflict, fmt.Errorf("%w: %s on the server is not a directory (a file or a symbolic link): %s cannot be uploaded below it; choose another name", ErrExists, dir, name)
		}
		for _, inner := range []string{snapshot.ManifestName, Latest} {
			if _, err := r.root.Lstat(dir + "/" + inner); err == nil {
				return http.StatusConflict, fmt.Errorf("%w: %s on the server is a snapshot (it holds %s): %s cannot be uploaded inside it; choose another name", ErrExists, dir, inner, name)
			}
		}
	}
	fi, err := r.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return http.StatusInternalServerError, fmt.Errorf("%s: %w", name, err)
	}
	if !fi.IsDir() {
		return http.StatusConflict, fmt.Errorf("%w: %s on the server is not a directory (a file or a symbolic link): choose another name or move it away", ErrExists, name)
	}
	entries, err := r.readDir(name)
	if err != nil {
		return http.StatusInternalServerError, err
	}
	if slices.ContainsFunc(entries, func(e fs.DirEntry) bool { return e.Name() == snapshot.ManifestName }) {
		return http.StatusConflict, fmt.Errorf("%w: %s on the server is a snapshot directory, not generations: it is never replaced by an upload; choose another name, or move it away", ErrExists, name)
	}
	var gens []string
	for _, e := range entries {
		n := e.Name()
		switch {
		case e.IsDir() && isGeneration(n):
			gens = append(gens, n)
		case n == Latest && e.Type()&fs.ModeSymlink != 0, strings.HasPrefix(n, "."):
		default:
			return http.StatusConflict, fmt.Errorf("%w: %s on the server holds %s, which is not a generation: uploads publish only into a directory of generations; choose another name", ErrExists, name, n)
		}
	}
	if slices.Contains(gens, gen) {
		return http.StatusConflict, fmt.Errorf("%w: %s/%s already exists on the server: another capture of the same second; capture again", ErrExists, name, gen)
	}
	if len(gens) > 0 && !overwrite {
		return http.StatusConflict, fmt.Errorf("%w: %s exists on the server (%d generations, the newest %s): set overwrite = true in the plan's machine entry to add a generation (the last %d are kept)", ErrExists, name, len(gens), slices.Max(gens), r.cfg.Keep)
	}
	return 0, nil
}

func (r *Receiver) readDir(name string) ([]fs.DirEntry, error) {
	d, err := r.root.Open(name)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadDir(-1)
}
