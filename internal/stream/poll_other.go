//go:build !linux

package stream

import (
	"context"
	"net"
	"net/http"

	"github.com/sse-gateway/sse-gateway/internal/hub"
)

// poller is Linux-only (epoll); elsewhere every stream is served on the net/http path.
type poller struct{}

func newPoller(*Server) (*poller, error) { return nil, nil }

func (p *poller) run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (s *Server) serveTakeover(w http.ResponseWriter, r *http.Request, b *streamBase, channels []string, floor hub.Version) {
	s.serveLoop(w, r, b, channels, floor)
}

// ConnContext is for http.Server.ConnContext; TCP_USER_TIMEOUT is Linux-only, so it does
// nothing here.
func (s *Server) ConnContext(ctx context.Context, _ net.Conn) context.Context { return ctx }
