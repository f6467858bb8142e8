//go:build !unix

package stream

// DefaultMaxStreams is 0 (no cap) where there is no open-files limit to derive one from.
func DefaultMaxStreams() int { return 0 }
