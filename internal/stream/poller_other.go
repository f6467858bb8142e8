//go:build !linux

package stream

import (
	"context"
	"net"
)

// poller is Linux-only (epoll); elsewhere newPoller returns nil and every stream is served on
// the net/http path.
type poller struct{}

func newPoller(*Server) (*poller, error) { return nil, nil }

func (p *poller) run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// takeOver is never called here (there is no poller); it hangs up rather than leak.
func (p *poller) takeOver(_ context.Context, nc net.Conn, _ *streamBase, _ []string, _ start, _ []byte) {
	_ = nc.Close()
}
