// Package gwtest gives tests that run the gateway as a process (e2e/, reliability/) the
// sse-gateway binary: the one named by an environment variable, or ./cmd/sse-gateway built
// once per test process; a private certificate authority for tests that speak TLS (certs.go); and
// a count of goroutines by function and state, for tests that wait for goroutines to get
// somewhere (goroutines.go).
package gwtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	once   sync.Once
	bin    string
	binErr error
)

// RepoRoot is the module root.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("gwtest: cannot locate the source file")
	}
	return filepath.Dir(filepath.Dir(filepath.Dir(file))) // internal/gwtest/gwtest.go
}

// Binary returns $envVar when it is set (it must exist), or builds ./cmd/sse-gateway into
// dir, once per test process; with race the gateway is built with -race, so that races in
// it under real clients fail the run too.
func Binary(t testing.TB, envVar, dir string, race bool) string {
	t.Helper()
	if p := os.Getenv(envVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", envVar, p, err)
		}
		return p
	}
	once.Do(func() {
		bin = filepath.Join(dir, "sse-gateway")
		args := []string{"build", "-o", bin}
		if race {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/sse-gateway")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if binErr != nil {
		t.Fatalf("building the gateway failed: %v", binErr)
	}
	return bin
}
