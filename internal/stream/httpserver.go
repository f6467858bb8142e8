package stream

import (
	"log/slog"
	"net/http"
	"time"
)

// maxHeaderBytes leaves room for a 1 MB URL to reach the handler and get a JSON 414 rather
// than net/http's bare 431; ReadHeaderTimeout bounds how long such a request may hold memory.
const maxHeaderBytes = 2 << 20

// NewHTTPServer returns an http.Server for h with the settings streams depend on: a
// ReadHeaderTimeout against slowloris, an IdleTimeout, room for long URLs (so that an
// overlong query gets this package's JSON 414), and never a WriteTimeout or ReadTimeout,
// which would cut every long-lived stream (streams set a deadline per write instead).
// net/http's own error log goes to log at debug level. A server that carries streams also
// needs ConnContext set to the stream server's.
func NewHTTPServer(h http.Handler, readHeaderTimeout time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
