//go:build !linux

package stream

import "context"

// poller is Linux-only (epoll); elsewhere newPoller returns nil and every stream is served on
// the net/http path.
type poller struct{}

func newPoller(*Server) (*poller, error) { return nil, nil }

func (p *poller) run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// takeOver is never called here (there is no poller).
func (p *poller) takeOver(int, *streamBase, []string, start, []byte) {
	panic("stream: takeOver without a poller")
}
