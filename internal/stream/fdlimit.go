package stream

// maxStreamsFor is the stream cap under an open-files limit of nofile (see DefaultMaxStreams).
func maxStreamsFor(nofile int) int {
	n := nofile - 256
	n -= n / 20
	return max(n, 64)
}
