package main

import (
	"bytes"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

// TestSecretsNeverLogged is the README's "keys are held hashed and never logged", and the
// same for every other secret the gateway is given: subscribe keys (from the keys file and
// from Redis), the admin token, Redis passwords in the three --redis-url forms (a user and
// password, and in redis+sentinel:// the data nodes' and the sentinels' own), and the
// secrets clients send that are wrong. Every line the command writes to stderr, at
// --log-level debug, is scanned, through a run that makes it log as much as it can: streams,
// refusals, publishes, keys added in Redis and a SIGHUP reload, Redis killed and restarted,
// a Sentinel failover, wrong passwords, an unparsable URL, and the publish and keys CLIs.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	sec := newSecrets()
	fileKey, tokenOK := sec.add("file-key-3c81e0"), sec.add("admin-token-9f24b7")
	tokenWrong, keyWrong := sec.add("wrong-token-51d0aa"), sec.add("wrong-key-e6b21f")
	redisPass, redisWrongPass := sec.add("redis-pass-0d7c3e"), sec.add("redis-wrongpass-44a9f2")
	dataPass, sentinelPass := sec.add("data-pass-b3e8d1"), sec.add("sentinel-pass-7a6c05")

	// Redis with an ACL user, so the URL carries user and password.
	aclArgs := []string{"--user", "default", "off", "--user", "gw", "on", ">" + redisPass, "~*", "&*", "+@all"}
	rdb := redistest.Start(t, aclArgs...)
	redisURL := "redis://gw:" + redisPass + "@" + rdb.Addr() + "/0"
	keys := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(keys, []byte(`{"keys":[{"name":"file","key":"`+fileKey+`","channels":["*"]},{"name":"other","key":"other-key","channels":["*"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	var logs []string // every stderr line of every process

	gw := startChild(t, 0, nil, "serve", "--addr", "127.0.0.1:0", "--redis-url", redisURL, "--keys-file", keys, "--keys-redis",
		"--admin-token", tokenOK, "--max-streams-per-key", "100", "--log-level", "debug", "--probe-interval", "200ms", "--drain", "100ms")
	rec, _ := gw.waitRecord("listening", 0)
	g := &testGateway{t: t, addr: rec["addr"].(string), scheme: "http"}
	g.waitReady(c)
	s := mustOpen(t, c, g.streamURL(fileKey, "ch"))
	if _, resp := openStream(t, c, g.streamURL(keyWrong, "ch")); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong key: %s", resp.Status)
	}
	publishWith(t, c, g, tokenOK, http.StatusAccepted)
	publishWith(t, c, g, tokenWrong, http.StatusUnauthorized)
	s.data(t, waitLimit)

	// Keys kept in Redis: the CLI prints the new key on stdout (that is its job) and nothing
	// secret elsewhere; the gateway picks it up.
	out, errOut := runCommand(t, 0, "keys", "add", "--redis-url", redisURL, "--name", "redis", "--channels", "*")
	logs = append(logs, errOut)
	redisKey := sec.add(strings.TrimSpace(out))
	waitFor(t, waitLimit, "the key added in Redis to work", func() bool {
		s, resp := openStream(t, c, g.streamURL(redisKey, "ch"))
		if s == nil {
			resp.Body.Close()
			return false
		}
		s.Close()
		return true
	})
	out, errOut = runCommand(t, 0, "keys", "list", "--redis-url", redisURL)
	logs = append(logs, out, errOut)
	out, errOut = runCommand(t, 0, "publish", "--redis-url", redisURL, "--channel", "ch", "--etag", `"cli"`)
	logs = append(logs, out, errOut)
	out, errOut = runCommand(t, 0, "publish", "--gateway", g.url(""), "--admin-token", tokenOK, "--channel", "ch", "--etag", `"cli2"`)
	logs = append(logs, out, errOut)

	// SIGHUP with a key removed from the file.
	if err := os.WriteFile(keys, []byte(`{"keys":[{"name":"other","key":"other-key","channels":["*"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	gw.signal(syscall.SIGHUP)
	gw.waitRecord("SIGHUP: keys reloaded", 0)

	// Redis dies and comes back: every reconnecting part of the gateway logs its errors.
	rdb.Kill()
	waitFor(t, waitLimit, "the gateway to notice Redis is gone", func() bool { return status(t, c, g.url("/readyz")) != http.StatusOK })
	out, errOut = runCommand(t, 1, "publish", "--redis-url", redisURL, "--channel", "ch", "--etag", `"down"`)
	logs = append(logs, out, errOut)
	rdb.Restart(aclArgs...)
	g.waitReady(c)
	if code, ok := gw.stop(waitLimit); !ok || code != 0 {
		t.Fatalf("gateway exit %d (in time: %v)", code, ok)
	}
	logs = append(logs, gw.log()...)

	// A wrong Redis password, and a URL that does not parse.
	wrong := startChild(t, 0, nil, "serve", "--addr", "127.0.0.1:0", "--keys-file", keys, "--admin-token", tokenOK,
		"--redis-url", "redis://gw:"+redisWrongPass+"@"+rdb.Addr()+"/0", "--log-level", "debug", "--drain", "100ms")
	wrong.waitRecord("listening", 0)
	waitFor(t, waitLimit, "the gateway to log a failed subscription", func() bool {
		return strings.Contains(strings.Join(wrong.log(), "\n"), "WRONGPASS")
	})
	wrong.stop(waitLimit)
	logs = append(logs, wrong.log()...)
	out, errOut = runCommand(t, 2, "serve", "--addr", "127.0.0.1:0", "--keys-file", keys,
		"--redis-url", "redis://gw:"+redisPass+"@"+rdb.Addr()+"/0?dial_timeout=soon")
	logs = append(logs, out, errOut)

	// Sentinel: the data nodes' password in the URL's user part, the sentinels' in its query.
	d := redistest.StartSentinels(t, 1, 3, dataPass, sentinelPass)
	sentinelURL := d.URL()
	if !strings.Contains(sentinelURL, dataPass) || !strings.Contains(sentinelURL, sentinelPass) {
		t.Fatalf("sentinel URL %q lacks a password", sentinelURL)
	}
	sg := startChild(t, 0, nil, "serve", "--addr", "127.0.0.1:0", "--redis-url", sentinelURL, "--keys-file", keys,
		"--admin-token", tokenOK, "--log-level", "debug", "--probe-interval", "200ms", "--drain", "100ms")
	rec, _ = sg.waitRecord("listening", 0)
	sgw := &testGateway{t: t, addr: rec["addr"].(string), scheme: "http"}
	sgw.waitReady(c)
	old := d.Master()
	old.Kill()
	d.WaitMaster(old, 60*time.Second)
	waitFor(t, waitLimit, "the gateway to follow the failover", func() bool {
		return strings.Count(strings.Join(sg.log(), "\n"), "sentinel: new master") >= 2
	})
	sgw.waitReady(c)
	publishWith(t, c, sgw, tokenOK, http.StatusAccepted)
	out, errOut = runCommand(t, 0, "publish", "--redis-url", sentinelURL, "--channel", "ch", "--etag", `"sentinel"`)
	logs = append(logs, out, errOut)
	sg.stop(waitLimit)
	logs = append(logs, sg.log()...)
	wrongSentinel := strings.Replace(sentinelURL, sentinelPass, redisWrongPass, 1)
	ws := startChild(t, 0, nil, "serve", "--addr", "127.0.0.1:0", "--redis-url", wrongSentinel, "--keys-file", keys,
		"--admin-token", tokenOK, "--log-level", "debug", "--drain", "100ms")
	ws.waitRecord("listening", 0)
	waitFor(t, waitLimit, "the gateway to log a failed sentinel connection", func() bool {
		return strings.Contains(strings.Join(ws.log(), "\n"), `"level":"WARN"`)
	})
	ws.stop(waitLimit)
	logs = append(logs, ws.log()...)

	lines := 0
	for _, block := range logs {
		for _, line := range strings.Split(block, "\n") {
			lines++
			if found := sec.in(line); found != "" {
				t.Errorf("a secret (%s) was logged: %s", found, line)
			}
		}
	}
	// The run went where secrets could leak: each of these was logged.
	all := strings.Join(logs, "\n")
	for _, want := range []string{
		`"broker":"standalone redis://gw:`, `"broker":"sentinel redis+sentinel://`, // the URLs, redacted
		"redis keys: change announced", "SIGHUP: keys reloaded", "redis subscription down",
		"WRONGPASS", "sentinel: new master", "invalid dial_timeout", "not published, retry",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no log line has %q: the run did not exercise what it should have", want)
		}
	}
	t.Logf("%d log lines scanned for %d secrets", lines, len(sec.list))
}

// secrets are the values that must never appear in a log line, in the forms they could be
// written in (verbatim, or escaped as in a URL).
type secrets struct{ list []string }

func newSecrets() *secrets { return &secrets{} }

func (s *secrets) add(v string) string {
	s.list = append(s.list, v)
	return v
}

// in returns the first secret line holds, or "".
func (s *secrets) in(line string) string {
	for _, v := range s.list {
		for _, form := range []string{v, url.QueryEscape(v), url.PathEscape(v)} {
			if strings.Contains(line, form) {
				return v
			}
		}
	}
	return ""
}

// publishWith posts one event through the publish API with a bearer token and checks the
// status.
func publishWith(t *testing.T, c *http.Client, g *testGateway, token string, want int) {
	t.Helper()
	body := `{"channel":"ch","data":{"etag":"\"e` + time.Now().Format("150405.000000") + `\"","lastModified":` + strconv.FormatInt(time.Now().UnixMilli(), 10) + `}}`
	req, _ := http.NewRequest(http.MethodPost, g.url("/v1/publish"), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("publish with a token: %s, want %d", resp.Status, want)
	}
}

// runCommand runs `sse-gateway args...` as a child process and returns its stdout and
// stderr; it fails the test unless the exit code is want.
func runCommand(t *testing.T, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	return runCommandEnv(t, want, nil, args...)
}

// runCommandEnv is runCommand with env added to the child's environment.
func runCommandEnv(t *testing.T, want int, env []string, args ...string) (stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = childEnviron(append(env, childEnv+"=1", childArgsEnv+"="+strings.Join(args, "\n"))...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	_ = cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != want {
		t.Fatalf("sse-gateway %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out.String(), errOut.String())
	}
	return out.String(), errOut.String()
}
