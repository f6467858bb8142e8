package gwtest

import (
	"runtime"
	"strings"
)

// Goroutines counts this process's goroutines whose stack includes fn (a function as
// runtime.Stack prints it, e.g. "stream.(*poller).takeOver(") and whose state starts with
// state ("select", "chan receive", ...; "" for any): the positive sign that goroutines got
// where a test waits for them, or left, instead of a sleep that hopes they did.
func Goroutines(fn, state string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, frames, _ := strings.Cut(g, "\n")
		// "goroutine 42 [select]:" or "goroutine 42 [select, 2 minutes]:"
		open := strings.IndexByte(header, '[')
		if open < 0 || !strings.Contains(frames, fn) {
			continue
		}
		st, ok := strings.CutPrefix(header[open+1:], state)
		if ok && st != "" && (state == "" || st[0] == ']' || st[0] == ',') {
			count++
		}
	}
	return count
}
