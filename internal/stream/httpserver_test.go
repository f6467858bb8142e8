package stream

import (
	"log/slog"
	"net/http"
	"testing"
	"time"
)

// The HTTP server settings that protect the listener, and none that would cut streams.
func TestNewHTTPServer(t *testing.T) {
	t.Parallel()
	s := NewHTTPServer(http.NotFoundHandler(), 5*time.Second, slog.New(slog.DiscardHandler))
	if s.ReadHeaderTimeout != 5*time.Second || s.IdleTimeout <= 0 || s.MaxHeaderBytes < 2*maxQueryLen || s.MaxHeaderBytes > 64<<10 {
		t.Fatalf("ReadHeaderTimeout %v, IdleTimeout %v, MaxHeaderBytes %d: all must be set", s.ReadHeaderTimeout, s.IdleTimeout, s.MaxHeaderBytes)
	}
	if s.WriteTimeout != 0 || s.ReadTimeout != 0 {
		t.Fatal("WriteTimeout/ReadTimeout would cut long-lived streams")
	}
}

// The stream cap leaves room under the open-files limit, and never drops below 64.
func TestMaxStreamsFor(t *testing.T) {
	t.Parallel()
	for nofile, want := range map[int]int{400: 137, 1024: 730, 65536: 62016, 100: 64} {
		if got := maxStreamsFor(nofile); got != want {
			t.Errorf("maxStreamsFor(%d) = %d, want %d", nofile, got, want)
		}
	}
	if n := DefaultMaxStreams(); n < 0 {
		t.Fatalf("DefaultMaxStreams() = %d", n)
	}
}
