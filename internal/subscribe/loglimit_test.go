package subscribe

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// lockedBuffer is a log destination safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.b.String()), "\n")
}

// One line per interval gets through, and the next one says how many were suppressed.
func TestLogLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out lockedBuffer
		l := newLogLimiter(slog.New(slog.NewTextHandler(&out, nil)), time.Second)
		for range 3 {
			l.Log(slog.LevelWarn, "bad event")
		}
		time.Sleep(time.Second - 1)
		l.Log(slog.LevelWarn, "bad event") // still within the interval
		time.Sleep(time.Nanosecond)
		l.Log(slog.LevelWarn, "bad event")
		l.Log(slog.LevelDebug, "below the handler's level") // not counted, not written
		lines := out.lines()
		if len(lines) != 2 || !strings.Contains(lines[0], "suppressed=0") || !strings.Contains(lines[1], "suppressed=3") {
			t.Fatalf("log lines %q, want two: suppressed=0, then suppressed=3 one interval later", lines)
		}
	})
}
