package main

import (
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// childEnv, when set, makes the test binary run the command itself (main's run) with the
// arguments in childArgsEnv, separated by newlines: tests that need a process of their own
// (its own open-files limit, a real exit) re-execute the test binary this way.
const (
	childEnv     = "SSE_GATEWAY_TEST_CHILD"
	childArgsEnv = "SSE_GATEWAY_TEST_CHILD_ARGS"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(run(strings.Split(os.Getenv(childArgsEnv), "\n")))
	}
	goleak.VerifyTestMain(m)
}
