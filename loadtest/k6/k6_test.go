// Package k6 holds the k6 scripts (JavaScript, run by a k6 binary built with
// github.com/phymbert/xk6-sse). k6 is not needed to test them: these tests
// check their syntax with Node (ES modules) and exercise lib.js's logic.
package k6

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func node(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js 18+) is required to check the k6 scripts' syntax; install it (apt-get install nodejs): %v", err)
	}
	return bin
}

// checkModule parses src as an ES module without running it. The source goes
// through stdin with --input-type=module: `node --check file.js` on Node 20
// accepts some broken ES-module files (module-syntax detection), stdin does not.
func checkModule(t *testing.T, nodeBin string, src []byte) (string, error) {
	t.Helper()
	cmd := exec.Command(nodeBin, "--input-type=module", "--check")
	cmd.Stdin = bytes.NewReader(src)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func scripts(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.js")
	if err != nil || len(files) < 3 {
		t.Fatalf("k6 scripts not found: %v %v", files, err)
	}
	return files
}

func TestScriptsSyntax(t *testing.T) {
	nodeBin := node(t)
	for _, f := range scripts(t) {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := checkModule(t, nodeBin, src); err != nil {
			t.Errorf("%s: syntax error: %v\n%s", f, err, out)
		}
	}
	// The checker must be able to fail, or the test above proves nothing.
	if _, err := checkModule(t, nodeBin, []byte("import sse from 'k6/x/sse';\nexport default function () { const x = ; }\n")); err == nil {
		t.Fatal("node accepted a broken module: the syntax check is not effective")
	}
}

var importRE = regexp.MustCompile(`(?m)^import\s[^;]*?from\s+'([^']+)'`)

// TestScriptsImports keeps the scripts runnable by k6 + xk6-sse: only k6's
// built-in modules, the xk6-sse module and local files that exist.
func TestScriptsImports(t *testing.T) {
	allowed := map[string]bool{"k6": true, "k6/http": true, "k6/metrics": true, "k6/execution": true, "k6/x/sse": true}
	for _, f := range scripts(t) {
		src, _ := os.ReadFile(f)
		for _, m := range importRE.FindAllStringSubmatch(string(src), -1) {
			mod := m[1]
			switch {
			case strings.HasPrefix(mod, "./"):
				if _, err := os.Stat(mod); err != nil {
					t.Errorf("%s imports missing %s", f, mod)
				}
			case !allowed[mod]:
				t.Errorf("%s imports %q: not a k6 built-in nor k6/x/sse", f, mod)
			}
		}
		if f != "lib.js" && !strings.Contains(string(src), "export const options") {
			t.Errorf("%s has no `export const options`", f)
		}
		if f == "lib.js" && importRE.MatchString(string(src)) {
			t.Errorf("lib.js must stay free of k6 imports (it is tested with plain Node)")
		}
	}
}

// TestLibLogic runs lib.js's helpers in Node and checks their results.
func TestLibLogic(t *testing.T) {
	nodeBin := node(t)
	const prog = `
import { config, channelFor, streamURL, publishBody, deliveryLatencyMs } from './lib.js';
const c = config({ CHANNELS: '3', KEY: 'a b', BASE_URL: 'http://127.0.0.1:9/' });
const body = JSON.parse(publishBody('k6_1', 7, 1000));
const inner = JSON.stringify({ etag: '"k6-7"', lastModified: 1007, sentAtMs: 1000 });
const env = JSON.stringify({ id: '1007-00000000', timestamp: 1, channel: 'k6_1', data: inner, name: 'change' });
console.log(JSON.stringify({
  defaults: config({}).channels,
  ch: [channelFor(c, 1), channelFor(c, 3), channelFor(c, 4)],
  url: streamURL(c, 'k6_0'),
  body,
  lat: deliveryLatencyMs(env, 1250, 900),
  old: deliveryLatencyMs(env, 1250, 1001),
  junk: deliveryLatencyMs('not json', 1, 0),
  nomarker: deliveryLatencyMs(JSON.stringify({ data: '{"etag":"x"}' }), 1, 0),
}));
`
	cmd := exec.Command(nodeBin, "--input-type=module", "-e", prog)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var got struct {
		Defaults int      `json:"defaults"`
		Ch       []string `json:"ch"`
		URL      string   `json:"url"`
		Body     struct {
			Channel string `json:"channel"`
			Data    struct {
				Etag         string `json:"etag"`
				LastModified int64  `json:"lastModified"`
				SentAtMs     int64  `json:"sentAtMs"`
			} `json:"data"`
		} `json:"body"`
		Lat      *float64 `json:"lat"`
		Old      *float64 `json:"old"`
		Junk     *float64 `json:"junk"`
		NoMarker *float64 `json:"nomarker"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	if got.Defaults != 1 || strings.Join(got.Ch, ",") != "k6_0,k6_2,k6_0" {
		t.Errorf("config/channelFor: %+v", got)
	}
	if got.URL != "http://127.0.0.1:9/event-stream?v=1.2&channels=k6_0&key=a%20b" {
		t.Errorf("streamURL = %s", got.URL)
	}
	if got.Body.Channel != "k6_1" || got.Body.Data.Etag != `"k6-7"` || got.Body.Data.LastModified != 1007 || got.Body.Data.SentAtMs != 1000 {
		t.Errorf("publishBody = %+v", got.Body)
	}
	if got.Lat == nil || *got.Lat != 250 || got.Old != nil || got.Junk != nil || got.NoMarker != nil {
		t.Errorf("deliveryLatencyMs: lat=%v old=%v junk=%v nomarker=%v", got.Lat, got.Old, got.Junk, got.NoMarker)
	}
}
