package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/sseparse"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
)

// sink gathers what every stream received: the events of each channel by sequence number
// and the delivery latency (publisher's sentAtNs to arrival, same clock).
type sink struct {
	channels int

	mu       sync.Mutex
	lat      stats.Hist
	got      []map[int64]int // guarded by mu: per stream, sequence -> times received
	wrong    int             // guarded by mu: events of another channel than the stream's
	bad      int             // guarded by mu: events without a load marker
	received int             // guarded by mu: every event
}

func newSink(channels int) *sink { return &sink{channels: channels} }

// stream is one SSE connection on one channel of one gateway.
type stream struct {
	id      int // index into sink.got
	channel int
	gw      int

	cancel context.CancelFunc
	done   chan struct{} // closed when its reader returned
	err    error         // why the reader returned, set before done closes
}

// newStreamSlot reserves the stream's place in the sink.
func (s *sink) newStreamSlot() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, map[int64]int{})
	return len(s.got) - 1
}

func (s *sink) event(id, channel int, data []byte, now int64) {
	m, err := sseparse.Quick(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received++
	switch {
	case err != nil:
		s.bad++
	case int(m.Seq%int64(s.channels)) != channel:
		s.wrong++
	default:
		s.got[id][m.Seq]++
		s.lat.Record(now - m.SentAtNs)
	}
}

// client opens streams; one http.Client (one transport) for all of them.
type client struct {
	hc  *http.Client
	key string
	cn  func(i int) string // channel name of index i
}

func newClient(key string, cn func(int) string) *client {
	tr := &http.Transport{
		DialContext:        (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableCompression: true,
	}
	return &client{hc: &http.Client{Transport: tr}, key: key, cn: cn}
}

// open starts a stream on channel of the gateway at addr and returns once its response
// headers arrived (the stream is open), or with why it could not open.
func (c *client) open(ctx context.Context, s *sink, addr string, gw, channel, id int) (*stream, error) {
	sctx, cancel := context.WithCancel(ctx)
	st := &stream{id: id, channel: channel, gw: gw, cancel: cancel, done: make(chan struct{})}
	u := "http://" + addr + "/event-stream?" + url.Values{"key": {c.key}, "channels": {c.cn(channel)}}.Encode()
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening a stream on %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("opening a stream on %s: %s", addr, resp.Status)
	}
	go func() {
		defer close(st.done)
		defer resp.Body.Close()
		p := sseparse.Parser{OnEvent: func(ev *sseparse.Event) {
			if string(ev.Type) == "message" {
				s.event(id, channel, ev.Data, time.Now().UnixNano())
			}
		}}
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if ferr := p.Feed(buf[:n]); ferr != nil {
					st.err = ferr
					return
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && sctx.Err() == nil {
					st.err = err
				} else if sctx.Err() == nil {
					st.err = errors.New("the gateway ended the stream")
				}
				return
			}
		}
	}()
	return st, nil
}

// close ends the stream (a client going away) and waits for its reader.
func (st *stream) close() {
	st.cancel()
	<-st.done
}

// failed returns why the stream ended while it should not have, or nil.
func (st *stream) failed() error {
	select {
	case <-st.done:
		if st.err != nil {
			return st.err
		}
		return errors.New("stream ended")
	default:
		return nil
	}
}
