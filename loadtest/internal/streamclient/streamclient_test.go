package streamclient

import (
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/sseparse"
)

func TestSourceIP(t *testing.T) {
	for _, tc := range []struct {
		i, n int
		want string
	}{
		{0, 64, "127.0.0.2"},
		{65, 64, "127.0.0.3"},
		{299, 300, "127.0.1.45"},
	} {
		if ip := SourceIP(tc.i, tc.n); ip.String() != tc.want {
			t.Errorf("SourceIP(%d, %d) = %v, want %s", tc.i, tc.n, ip, tc.want)
		}
	}
	if SourceIP(5, 0) != nil {
		t.Error("0 source IPs must leave the choice to the kernel")
	}
}

func TestClassify(t *testing.T) {
	long := strings.Repeat("x", 200)
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("status 503"), "status 503"},
		{errors.New("status 503 draining " + long), "status 503 draining " + long},
		{errors.New(`content-type "text/plain"`), `content-type "text/plain"`},
		{errors.New(long), long[:80]},
		{syscall.ECONNREFUSED, "connection refused"},
		{io.ErrUnexpectedEOF, "closed before response"},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// oneByte yields its text a byte a Read, then err: a frame split anywhere.
type oneByte struct {
	s   string
	err error
}

func (r *oneByte) Read(b []byte) (int, error) {
	if r.s == "" {
		return 0, r.err
	}
	b[0], r.s = r.s[0], r.s[1:]
	return 1, nil
}

func TestRead(t *testing.T) {
	var got []string
	p := sseparse.Parser{OnEvent: func(ev *sseparse.Event) { got = append(got, string(ev.Data)) }}
	if err := Read(&oneByte{s: "data: a\n\ndata: b\n\n", err: syscall.ECONNRESET}, &p); err != nil {
		t.Fatalf("a stream that ended: %v", err)
	}
	if strings.Join(got, ",") != "a,b" {
		t.Fatalf("events %q, want a and b", got)
	}
	p = sseparse.Parser{MaxLine: 4}
	if err := Read(&oneByte{s: "data: too long\n\n", err: io.EOF}, &p); !errors.Is(err, sseparse.ErrLineTooLong) {
		t.Fatalf("a line over MaxLine: %v, want ErrLineTooLong", err)
	}
}
