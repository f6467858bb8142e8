//go:build race

package e2e

// raceEnabled reports whether this test binary has the race detector; the gateway is then built with it too.
const raceEnabled = true
