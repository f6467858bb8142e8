package stream

import (
	"log/slog"
	"net/http"
	"time"
)

// maxHeaderBytes is what a stream request needs: a query of up to maxQueryLen (8 KiB), and
// room for its headers (a browser SDK's cookies). A longer query still reaches the handler
// and gets its JSON 414; a request over this limit gets net/http's bare 431. It bounds what
// one connection can make the server buffer while its headers arrive (it was 2 MiB, so
// that a 1 MB URL got the JSON 414), for at most ReadHeaderTimeout.
const maxHeaderBytes = 32 << 10

// NewHTTPServer returns an http.Server for h with the settings streams depend on: a
// ReadHeaderTimeout against slowloris, an IdleTimeout, headers limited to what a stream
// request needs (with room for an overlong query to get this package's JSON 414), and never a WriteTimeout or ReadTimeout,
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
