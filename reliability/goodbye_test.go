package reliability

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDrainCompletesFrameThenRetry (issue 10, item 4): a stream closed on purpose while it
// holds a partly written frame gets the rest of that frame and then its retry:, so it comes
// back after the jittered delay rather than its client's default; a client that does not
// read at all is cut within --write-timeout of its close. Before, such a stream got no
// retry: (or a cut-off one) and a frame cut in the middle.
func TestDrainCompletesFrameThenRetry(t *testing.T) {
	t.Parallel()
	const (
		ch    = "goodbye"
		pad   = 30000 // a frame of ~30 KB: far more than the small socket buffers take
		drain = time.Second
		wt    = 3 * time.Second
	)
	r := startRedis(t)
	g := startGateway(t, "goodbye", r.URL(), "--send-buffer", "4096", "--drain", drain.String(), "--write-timeout", wt.String())
	late := slowConn(t, g.Addr, source(0), ch, 0) // reads only after the drain
	slowConn(t, g.Addr, source(1), ch, 0)         // never reads
	waitFor(t, 10*time.Second, func() string { return "the two streams did not open" }, func() bool {
		return g.metrics().get("sse_gateway_streams_open") == 2
	})
	if s, body := g.publishAPI(ch, payload(`"big"`, time.Now().UnixMilli(), pad, false)); s != http.StatusAccepted {
		t.Fatalf("publish: %d %s", s, body)
	}
	time.Sleep(200 * time.Millisecond) // the frame is written as far as the buffers take it
	sigterm := time.Now()
	g.signal(syscall.SIGTERM)
	time.Sleep(drain + 500*time.Millisecond) // both streams are closed within the window

	_ = late.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(late)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response head: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(httputil.NewChunkedReader(br))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		t.Fatalf("reading the stream: %v (read %d bytes)", err, len(body))
	}
	text := string(body)
	frame, rest, ok := strings.Cut(text, `"name":"change"}`+"\n\n")
	switch {
	case !ok:
		t.Errorf("the event frame was cut: the stream ended after %d bytes: ...%q", len(text), text[max(0, len(text)-120):])
	case strings.Count(frame, "x") != pad:
		t.Errorf("the event frame carries %d of the %d padding bytes", strings.Count(frame, "x"), pad)
	case !regexp.MustCompile(`^retry: \d+\n\n$`).MatchString(rest):
		t.Errorf("after the complete frame the stream had %q, want only a retry: frame", rest)
	}

	code := g.waitExit(drain + wt + 10*time.Second)
	exited := time.Since(sigterm)
	if code != 0 {
		t.Errorf("gateway exited %d", code)
	}
	if limit := drain + wt + 3*time.Second; exited > limit {
		t.Errorf("gateway exited %v after SIGTERM, want within --drain + --write-timeout (+3s) = %v: a client that does not read must not hold the drain", exited.Round(time.Millisecond), limit)
	}
	t.Logf("a stream drained in the middle of a %d KB frame read all of it, then %q; the gateway exited %v after SIGTERM (--drain %v, --write-timeout %v, one client never reading)",
		len(frame)>>10, strings.TrimSpace(rest), exited.Round(time.Millisecond), drain, wt)
}
