package snapshot

import (
	"io"
	"log/slog"
	"net/http"
	"time"
)

// NewHandler serves the files under dir (snapshots, rescue media) with
// Range support, logging one line per request.
func NewHandler(dir string, log *slog.Logger) http.Handler {
	files := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		files.ServeHTTP(rec, r)
		if log != nil {
			log.Debug("http", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
				"range", r.Header.Get("Range"), "status", rec.status, "took", time.Since(start))
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// ReadFrom keeps the server's zero-copy path (sendfile) for file bodies.
func (s *statusRecorder) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := s.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(s.ResponseWriter, r)
}
