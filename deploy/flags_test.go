package deploy

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	flagsOnce sync.Once
	flagTable map[string]string
	flagsErr  error
)

// gatewayFlags returns the serve flags of the binary built from the Dockerfile, with
// their defaults, read from `sse-gateway flags --markdown`: rows of
// | `--name` | `SSE_GATEWAY_NAME` | `default` | meaning |.
func gatewayFlags(t *testing.T) map[string]string {
	t.Helper()
	b := gatewayBuild(t)
	flagsOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, b.binary, "flags", "--markdown")
		cmd.Env = gatewayEnv()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			flagsErr = err
			return
		}
		flagTable = map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			cells := strings.Split(line, "|")
			if len(cells) < 5 {
				continue
			}
			cell := strings.TrimSpace(cells[1])
			if !strings.HasPrefix(cell, "`--") {
				continue // header and separator rows
			}
			name := strings.Trim(cell, "`-")
			env := strings.Trim(strings.TrimSpace(cells[2]), "`")
			if env != envName(name) {
				flagsErr = fmt.Errorf("flag --%s has environment variable %s, want %s", name, env, envName(name))
				return
			}
			def := strings.Trim(strings.TrimSpace(cells[3]), "`")
			if def == `""` {
				def = ""
			}
			flagTable[name] = def
		}
		if len(flagTable) == 0 {
			flagsErr = fmt.Errorf("`sse-gateway flags --markdown` printed no flag rows:\n%s", out)
		}
	})
	if flagsErr != nil {
		t.Fatalf("reading the gateway's flag table: %v", flagsErr)
	}
	return flagTable
}
