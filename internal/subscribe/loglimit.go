package subscribe

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logLimiter lets one line through per interval and counts the others, so that a publisher
// sending garbage in a loop, or a store that is down, cannot flood the log.
type logLimiter struct {
	log   *slog.Logger
	every time.Duration

	mu         sync.Mutex
	next       time.Time // guarded by mu: when the next line may be written
	suppressed int       // guarded by mu: lines dropped since the last one written
}

func newLogLimiter(log *slog.Logger, every time.Duration) *logLimiter {
	return &logLimiter{log: log, every: every}
}

// Log writes the line, with the number of lines suppressed before it, unless a line was
// written less than one interval ago.
func (l *logLimiter) Log(level slog.Level, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	if now.Before(l.next) {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.next = now.Add(l.every)
	n := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	l.log.Log(context.Background(), level, msg, append(args, "suppressed", n)...)
}
