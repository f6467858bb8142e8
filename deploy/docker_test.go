package deploy

import (
	"bytes"
	"context"
	"debug/elf"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDockerignoreRules(t *testing.T) {
	text, err := os.ReadFile(filepath.Join(repoRoot(), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := parseDockerignore(string(text))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		out  bool
	}{
		{"go.mod", false},
		{"go.sum", false},
		{"cmd/sse-gateway/main.go", false},
		{"internal/hub/hub.go", false},
		{"internal/hub/hub_test.go", true},
		{"internal/stream/testdata/x.txt", true},
		{".git/config", true},
		{"bin/sse-gateway", true},
		{"deploy/kubernetes/deployment.yaml", true},
		{"e2e/node/node_modules/x/index.js", true},
		{"Dockerfile", true},
	} {
		if got := excluded(rules, tc.path); got != tc.out {
			t.Errorf("%s: excluded from the build context = %v, want %v", tc.path, got, tc.out)
		}
	}
}

func TestDockerfileStructure(t *testing.T) {
	df, err := parseDockerfileFile(filepath.Join(repoRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if len(df.stages) < 2 {
		t.Fatalf("%d stages, want a builder stage and a final stage", len(df.stages))
	}

	// Builder: the Go release that go.mod names.
	builder := df.stages[0]
	goMod, err := os.ReadFile(filepath.Join(repoRoot(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if want := "golang:" + string(m[1]); builder.base != want && !strings.HasPrefix(builder.base, want+"-") && !strings.HasPrefix(builder.base, want+".") {
		t.Errorf("builder stage FROM %s, want %s (the go directive of go.mod)", builder.base, want)
	}
	if builder.name == "" {
		t.Error("builder stage has no name (FROM ... AS build)")
	}
	goBuild := ""
	for _, in := range builder.all("RUN") {
		if strings.Contains(in.args, "go build") {
			goBuild = in.args
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version=${VERSION}", "./cmd/sse-gateway"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("builder's go build command %q lacks %q", goBuild, want)
		}
	}

	// Final stage: minimal and not root.
	final := df.final()
	if !strings.HasPrefix(final.base, "gcr.io/distroless/static") && final.base != "scratch" {
		t.Errorf("final stage FROM %s, want distroless static or scratch", final.base)
	}
	if strings.HasPrefix(final.base, "gcr.io/distroless/") && !strings.HasSuffix(final.base, ":nonroot") {
		t.Errorf("final stage FROM %s, want the :nonroot variant", final.base)
	}
	if runs := final.all("RUN"); len(runs) != 0 {
		t.Errorf("final stage has RUN at line %d: the image has no shell", runs[0].line)
	}
	user, ok := final.last("USER")
	if !ok {
		t.Fatal("final stage sets no USER: it would run as root")
	}
	uid, err := strconv.Atoi(strings.SplitN(strings.TrimSpace(user.args), ":", 2)[0])
	if err != nil || uid == 0 {
		t.Errorf("USER %q: want a numeric non-zero UID (runAsNonRoot cannot verify a name)", user.args)
	}

	st, err := df.stageVars(final, nil)
	if err != nil {
		t.Fatal(err)
	}
	exposed := map[string]bool{}
	for _, in := range final.all("EXPOSE") {
		for _, p := range strings.Fields(expand(in.args, st.vars())) {
			exposed[strings.TrimSuffix(p, "/tcp")] = true
		}
	}
	for env, port := range map[string]string{"SSE_GATEWAY_ADDR": "8080", "SSE_GATEWAY_METRICS_ADDR": "9090"} {
		if !exposed[port] {
			t.Errorf("EXPOSE lacks %s", port)
		}
		if _, p, err := net.SplitHostPort(st.env[env]); err != nil || p != port {
			t.Errorf("ENV %s=%q, want port %s to match EXPOSE", env, st.env[env], port)
		}
	}

	entry, ok := final.last("ENTRYPOINT")
	if !ok {
		t.Fatal("final stage has no ENTRYPOINT")
	}
	entryArgv, exec, err := entry.execForm()
	if err != nil || !exec || len(entryArgv) == 0 {
		t.Fatalf("ENTRYPOINT %q: want exec form (no shell in the image): %v", entry.args, err)
	}
	var copied string
	for _, in := range final.all("COPY") {
		if from, ok := in.flag("from"); ok && df.stage(from) == builder {
			f := strings.Fields(in.args)
			copied = f[len(f)-1]
		}
	}
	if copied != entryArgv[0] {
		t.Errorf("ENTRYPOINT runs %s but the binary is copied to %q", entryArgv[0], copied)
	}

	hc, ok := final.last("HEALTHCHECK")
	if !ok {
		t.Fatal("final stage has no HEALTHCHECK")
	}
	argv := healthcheckArgv(t, hc)
	if argv[0] != entryArgv[0] || len(argv) < 2 || argv[1] != "healthcheck" {
		t.Errorf("HEALTHCHECK CMD %q: want the binary's own healthcheck subcommand (%s healthcheck ...)", argv, entryArgv[0])
	}
	addr := argAfter(argv, "--addr")
	if host, port, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" || port != "8080" {
		t.Errorf("HEALTHCHECK --addr %q, want 127.0.0.1:8080 (SSE_GATEWAY_ADDR's port, on loopback)", addr)
	}
	for _, f := range []string{"interval", "timeout", "retries"} {
		if _, ok := hc.flag(f); !ok {
			t.Errorf("HEALTHCHECK has no --%s", f)
		}
	}

	labels := map[string]string{}
	for _, in := range final.all("LABEL") {
		kv, err := keyValues(in.args, false)
		if err != nil {
			t.Fatalf("line %d: %v", in.line, err)
		}
		for _, p := range kv {
			labels[p[0]] = p[1]
		}
	}
	for _, k := range []string{"title", "description", "source", "version", "revision", "created"} {
		if labels["org.opencontainers.image."+k] == "" {
			t.Errorf("no OCI label org.opencontainers.image.%s", k)
		}
	}
	if v := labels["org.opencontainers.image.version"]; v != "${VERSION}" {
		t.Errorf("org.opencontainers.image.version=%q, want ${VERSION} (the same build arg the binary gets)", v)
	}
}

// healthcheckArgv returns the exec-form argv of HEALTHCHECK CMD [...].
func healthcheckArgv(t *testing.T, hc instruction) []string {
	t.Helper()
	rest, ok := strings.CutPrefix(strings.TrimSpace(hc.args), "CMD")
	if !ok {
		t.Fatalf("HEALTHCHECK %q: want CMD [...]", hc.args)
	}
	in := hc
	in.args = rest
	argv, exec, err := in.execForm()
	if err != nil || !exec || len(argv) == 0 {
		t.Fatalf("HEALTHCHECK CMD %q: want exec form (no shell in the image): %v", rest, err)
	}
	return argv
}

func argAfter(argv []string, name string) string {
	for i, a := range argv {
		if a == name && i+1 < len(argv) {
			return argv[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func TestDockerBuildProducesStaticBinary(t *testing.T) {
	b := gatewayBuild(t)
	t.Logf("replayed RUN %s", b.goBuild)
	for _, f := range []string{"go.mod", "go.sum"} {
		if !contains(b.files, f) {
			t.Errorf("build context lacks %s", f)
		}
	}
	for _, f := range b.files {
		if strings.HasSuffix(f, "_test.go") || strings.HasPrefix(f, "deploy/") || strings.HasPrefix(f, ".git/") {
			t.Errorf("build context has %s: .dockerignore should leave it out", f)
		}
	}

	f, err := elf.Open(b.binary)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			t.Error("binary has PT_INTERP: it needs a dynamic loader, not static (CGO_ENABLED=0?)")
		case elf.PT_DYNAMIC:
			t.Error("binary has PT_DYNAMIC: dynamically linked")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) != 0 {
		t.Errorf("binary imports shared libraries %v", libs)
	}
	for _, s := range f.Sections {
		if s.Name == ".symtab" || strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			t.Errorf("binary has section %s: -ldflags \"-s -w\" did not strip it", s.Name)
		}
	}
	data, err := os.ReadFile(b.binary)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(b.version)) {
		t.Errorf("binary does not contain the VERSION build arg %q: -X main.version found no `var version string` in package main", b.version)
	}
	if bytes.Contains(data, []byte(b.rootfs)) {
		t.Errorf("binary contains the build directory %s: -trimpath missing", b.rootfs)
	}
}

func TestDockerHealthcheckRunsBinary(t *testing.T) {
	b := gatewayBuild(t)
	hc, _ := b.df.final().last("HEALTHCHECK")
	argv := healthcheckArgv(t, hc)

	// An address nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name   string
		status int // 0: no server
		ok     bool
	}{
		{"healthz 200", http.StatusOK, true},
		{"healthz 503", http.StatusServiceUnavailable, false},
		{"nothing listening", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := closedAddr
			var (
				mu   sync.Mutex
				hits []string
			)
			if tc.status != 0 {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					hits = append(hits, r.URL.Path)
					mu.Unlock()
					if r.URL.Path != "/healthz" {
						http.NotFound(w, r)
						return
					}
					w.WriteHeader(tc.status)
				}))
				defer srv.Close()
				addr = strings.TrimPrefix(srv.URL, "http://")
			}
			out, err := runHealthcheck(t, b.binary, argv, addr)
			if tc.ok && err != nil {
				t.Errorf("healthcheck %s: %v, want exit 0\n%s", addr, err, out)
			}
			if !tc.ok && err == nil {
				t.Errorf("healthcheck %s exited 0, want non-zero\n%s", addr, out)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.status != 0 && (len(hits) == 0 || hits[0] != "/healthz") {
				t.Errorf("healthcheck requested %v, want /healthz", hits)
			}
		})
	}
}

// runHealthcheck runs the HEALTHCHECK argv with the built binary and --addr replaced.
func runHealthcheck(t *testing.T, binary string, argv []string, addr string) ([]byte, error) {
	t.Helper()
	args := append([]string(nil), argv[1:]...)
	for i, a := range args {
		if a == "--addr" && i+1 < len(args) {
			args[i+1] = addr
		} else if strings.HasPrefix(a, "--addr=") {
			args[i] = "--addr=" + addr
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = gatewayEnv()
	return cmd.CombinedOutput()
}

// gatewayEnv is the host environment without SSE_GATEWAY_* settings.
func gatewayEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSE_GATEWAY_") {
			env = append(env, kv)
		}
	}
	return env
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The image build fetches only the modules the binary imports: none of the test tooling that
// go.mod also lists (a browser driver, Kubernetes types, SSE clients). The replay starts its
// RUN steps on an empty module cache, so what is in it afterwards is what the build fetched.
func TestDockerBuildFetchesOnlyTheBinarysModules(t *testing.T) {
	b := gatewayBuild(t)
	fetched := fetchedModules(t, filepath.Join(b.modCache, "cache", "download"))
	list := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}}{{end}}{{end}}", "./cmd/sse-gateway")
	list.Dir = repoRoot()
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/sse-gateway: %v", err)
	}
	needed := map[string]bool{}
	for _, m := range strings.Fields(string(out)) {
		needed[m] = true
	}
	if !fetched["github.com/redis/go-redis/v9"] {
		t.Fatalf("the replayed build fetched %v: the module download step did not run on the empty cache", fetched)
	}
	for m := range fetched {
		if !needed[m] {
			t.Errorf("the image build fetched %s, which the binary does not import", m)
		}
	}
	for _, m := range []string{"github.com/chromedp/chromedp", "github.com/chromedp/cdproto", "k8s.io/api", "k8s.io/apimachinery",
		"sigs.k8s.io/yaml", "github.com/launchdarkly/eventsource", "github.com/r3labs/sse/v2", "go.uber.org/goleak"} {
		if fetched[m] {
			t.Errorf("the image build fetched test tooling %s", m)
		}
	}
}

// fetchedModules lists the module paths that have a go.mod in a module download cache.
func fetchedModules(t *testing.T, root string) map[string]bool {
	t.Helper()
	mods := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".mod") {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(filepath.Dir(p))) // <module>/@v/<version>.mod
		if err != nil {
			return err
		}
		mods[unescapeModulePath(filepath.ToSlash(rel))] = true
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return mods
}

// unescapeModulePath undoes the module cache's case encoding ("!x" for "X").
func unescapeModulePath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '!' && i+1 < len(p) {
			i++
			b.WriteString(strings.ToUpper(p[i : i+1]))
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}
