package reliability

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSecretsStayOutOfReach (issue 10, item 9): the admin token and the Redis password can
// come from files (as container platforms mount secrets), so they are on no command line;
// /debug/pprof/cmdline, which would print a command line to whoever reaches --metrics-addr,
// is not served; and neither secret is ever logged. Before, --admin-token was the only way
// to give the token, and /debug/pprof/cmdline returned it.
func TestSecretsStayOutOfReach(t *testing.T) {
	t.Parallel()
	const redisPassword = "redis-secret-9f1c"
	r := startRedis(t, "--requirepass", redisPassword)

	// A token on the command line (still accepted) does not come back from pprof.
	withFlag := startGateway(t, "secrets-flag", strings.Replace(r.URL(), "redis://", "redis://:"+redisPassword+"@", 1),
		"--pprof", "--metrics-addr", "127.0.0.1:0")
	metricsAddr := metricsListener(t, withFlag)
	status, body := httpGet("http://" + metricsAddr + "/debug/pprof/cmdline")
	if strings.Contains(body, adminToken) || status == http.StatusOK {
		t.Errorf("/debug/pprof/cmdline answered %d with the admin token: %q", status, body)
	}
	if status, _ := httpGet("http://" + metricsAddr + "/debug/pprof/heap"); status != http.StatusOK {
		t.Errorf("/debug/pprof/heap: %d, want the profiles still served", status)
	}

	// Both secrets from files, with the trailing newline a mounted secret often has.
	dir := t.TempDir()
	tokenFile, pwFile := filepath.Join(dir, "admin-token"), filepath.Join(dir, "redis-password")
	for f, v := range map[string]string{tokenFile: adminToken + "\n", pwFile: redisPassword + "\n"} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	g := newGateway(t, "secrets-files", r.URL(), "--admin-token-file", tokenFile, "--redis-password-file", pwFile,
		"--log-level", "debug", "--pprof", "--metrics-addr", "127.0.0.1:0")
	i := slices.Index(g.args, "--admin-token")
	g.args = slices.Delete(g.args, i, i+2) // only the file
	g.start()
	g.waitReady(30 * time.Second) // it authenticated to Redis with the file's password
	if s, body := g.publishAPI("secrets", payload(`"s1"`, 1, 0, false)); s != http.StatusAccepted {
		t.Errorf("publish with the token from the file: %d %s", s, body)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", g.pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, gw := range []*gateway{withFlag, g} {
		logs := gw.log.tail(maxLogLines)
		for name, secret := range map[string]string{"admin token": adminToken, "Redis password": redisPassword} {
			if strings.Contains(logs, secret) {
				t.Errorf("gateway %s logged the %s", gw.name, name)
			}
			if gw == g && strings.Contains(string(cmdline), secret) {
				t.Errorf("the %s is on the command line of a gateway given it in a file", name)
			}
		}
	}
}
