package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPReloadsKeysFile is the README's "--keys-file keys.json, reloaded on SIGHUP
// (streams of removed keys are closed)", on the command in a process of its own: after the
// file changes and the process gets SIGHUP, the removed key's stream ends without a retry:
// (the key will not work again) and is counted "revoked", the removed key is refused, an
// added key works, and a kept key's stream goes on receiving. A file that no longer parses
// keeps the keys the gateway has.
func TestSIGHUPReloadsKeysFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys.json")
	writeKeys(t, path, map[string]string{"removed": "secret-removed", "kept": "secret-kept"})
	proc := startChild(t, 0, nil, "serve", "--addr", "127.0.0.1:0", "--keys-file", path,
		"--admin-token", testAdminToken, "--drain", "100ms", "--heartbeat", "1s")
	rec, seen := proc.waitRecord("listening", 0)
	g := &testGateway{t: t, addr: rec["addr"].(string), scheme: "http"}
	c := newClient(t)
	removed := mustOpen(t, c, g.streamURL("secret-removed", "ch"))
	kept := mustOpen(t, c, g.streamURL("secret-kept", "ch"))

	writeKeys(t, path, map[string]string{"kept": "secret-kept", "added": "secret-added"})
	proc.signal(syscall.SIGHUP)
	rec, seen = proc.waitRecord("SIGHUP: keys reloaded", seen)
	if rec["revoked"] != 1.0 || rec["streams_closed"] != 1.0 {
		t.Errorf("reload logged revoked=%v streams_closed=%v, want 1 and 1", rec["revoked"], rec["streams_closed"])
	}
	var retry []string
	ended := false
	for deadline := time.After(waitLimit); !ended; {
		select {
		case line, ok := <-removed.lines:
			ended = !ok
			if strings.HasPrefix(line, "retry:") {
				retry = append(retry, line)
			}
		case <-deadline:
			t.Fatalf("the removed key's stream is still open %v after SIGHUP", waitLimit)
		}
	}
	if len(retry) != 0 {
		t.Errorf("the removed key's stream was told to retry (%q): its key will not work again", retry)
	}
	if _, resp := openStream(t, c, g.streamURL("secret-removed", "ch")); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("removed key after SIGHUP: %s, want 401", resp.Status)
	}
	added := mustOpen(t, c, g.streamURL("secret-added", "ch"))
	g.publish(c, "ch", `"after-hup"`, time.Now().UnixMilli())
	for name, s := range map[string]*sseStream{"kept": kept, "added": added} {
		if d := s.data(t, waitLimit); !strings.Contains(d, `after-hup`) {
			t.Errorf("the %s key's stream got %q, want the publish after SIGHUP", name, d)
		}
	}
	if n := metricValue(t, c, g.url("/metrics"), `sse_gateway_stream_closes_total{reason="revoked"}`); n != 1 {
		t.Errorf(`stream_closes_total{reason="revoked"} = %v, want 1`, n)
	}

	// A broken file: rejected, the current keys stay.
	if err := os.WriteFile(path, []byte(`{"keys":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	proc.signal(syscall.SIGHUP)
	proc.waitRecord("SIGHUP: keys file rejected, keeping the current keys", seen)
	for _, key := range []string{"secret-kept", "secret-added"} {
		mustOpen(t, c, g.streamURL(key, "ch")).Close()
	}
}

// metricValue reads one series (written as in the exposition) from a /metrics URL; 0 when
// absent.
func metricValue(t *testing.T, c *http.Client, url, series string) float64 {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}
