package e2e

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// shortClient is for one-shot requests (never for streams).
var shortClient = &http.Client{Timeout: 3 * time.Second}

func newRequest(ctx context.Context, url string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
}

// rawItem is one thing read off a stream by the spec's rules: an event (dispatched at a blank
// line) or a comment line.
type rawItem struct {
	At      time.Time
	Comment bool
	ID      string
	Event   string
	Data    string
}

// rawStream reads an SSE response with no client library, to see exactly what is on the wire.
type rawStream struct {
	Resp   *http.Response
	Items  chan rawItem // closed when the stream ends
	cancel context.CancelFunc
}

// openRawStream GETs url with headers and fails the test unless the answer is 200 text/event-stream.
// The stream is closed at test cleanup.
func openRawStream(t testing.TB, url string, header http.Header) *rawStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := newRequest(ctx, url)
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	connectCtx, connectCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer connectCancel()
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() { resp, err := http.DefaultClient.Do(req); done <- result{resp, err} }()
	var r result
	select {
	case r = <-done:
	case <-connectCtx.Done():
		cancel()
		t.Fatalf("raw stream %s: no response headers within 5s", url)
	}
	if r.err != nil {
		cancel()
		t.Fatalf("raw stream %s: %v", url, r.err)
	}
	if r.resp.StatusCode != 200 || !strings.HasPrefix(r.resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		r.resp.Body.Close()
		t.Fatalf("raw stream %s: got %d %q, want 200 text/event-stream", url, r.resp.StatusCode, r.resp.Header.Get("Content-Type"))
	}
	s := &rawStream{Resp: r.resp, Items: make(chan rawItem, 256), cancel: cancel}
	go s.read()
	t.Cleanup(s.close)
	return s
}

func (s *rawStream) close() { s.cancel(); s.Resp.Body.Close() }

func (s *rawStream) read() {
	defer close(s.Items)
	sc := bufio.NewScanner(s.Resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var ev rawItem
	var data []string
	hasData := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if hasData || ev.ID != "" || ev.Event != "" {
				ev.Data = strings.Join(data, "\n")
				ev.At = time.Now()
				s.Items <- ev
			}
			ev, data, hasData = rawItem{}, nil, false
		case strings.HasPrefix(line, ":"):
			s.Items <- rawItem{At: time.Now(), Comment: true, Data: line[1:]}
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				ev.ID = value
			case "event":
				ev.Event = value
			case "data":
				data, hasData = append(data, value), true
			}
		}
	}
}

// next returns the next event (skipping comments), or ok=false after timeout or stream end.
func (s *rawStream) next(timeout time.Duration) (rawItem, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case it, open := <-s.Items:
			if !open {
				return rawItem{}, false
			}
			if !it.Comment {
				return it, true
			}
		case <-deadline.C:
			return rawItem{}, false
		}
	}
}
