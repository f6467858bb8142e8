//go:build unix

package stream

import "golang.org/x/sys/unix"

// DefaultMaxStreams is the stream cap for an instance with no configured one: the
// open-files limit less room for listeners, Redis connections and requests being refused
// (256, then 5%), so that the instance answers 503 instead of failing accept(). It is 0 (no
// cap) when the limit is unknown or unlimited, and at least 64.
func DefaultMaxStreams() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY {
		return 0
	}
	return maxStreamsFor(int(lim.Cur))
}
