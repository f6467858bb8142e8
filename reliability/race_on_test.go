//go:build race

package reliability

// raceEnabled reports whether this test binary has the race detector; the gateway is then
// built with it too, so a race in the gateway under these scenarios fails the test.
const raceEnabled = true
