package deploy

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// What this file does instead of `docker build` (there is no Docker engine here): it
// copies the repository through .dockerignore into a build context, replays the builder
// stage's COPY, ARG, ENV, WORKDIR and RUN instructions on a directory standing for the
// builder's file system (the RUN commands verbatim, through sh -c, with BuildKit's
// --mount flags dropped: the host's build cache stands in for the build cache mount, and an
// empty module cache, fed offline from the host's module cache as a file:// GOPROXY, for the
// module cache mount, so that what the build fetches can be listed), and returns the file
// that the final stage's COPY --from takes.

// ignoreRule is one .dockerignore line.
type ignoreRule struct {
	pattern string
	re      *regexp.Regexp
	negate  bool
}

func parseDockerignore(text string) ([]ignoreRule, error) {
	var rules []ignoreRule
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if p, ok := strings.CutPrefix(line, "!"); ok {
			r.negate, line = true, strings.TrimSpace(p)
		}
		line = strings.TrimPrefix(path.Clean(filepath.ToSlash(line)), "/")
		re, err := ignorePatternRegexp(line)
		if err != nil {
			return nil, fmt.Errorf(".dockerignore %q: %w", line, err)
		}
		r.pattern, r.re = line, re
		rules = append(rules, r)
	}
	return rules, nil
}

// ignorePatternRegexp follows Docker's patternmatcher: `*` and `?` stay within a path
// element, `**` crosses elements, `**/` at a boundary may match nothing.
func ignorePatternRegexp(p string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '*' && i+1 < len(p) && p[i+1] == '*':
			i++
			if i+1 < len(p) && p[i+1] == '/' {
				i++
				b.WriteString("(.*/)?")
			} else {
				b.WriteString(".*")
			}
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '[':
			j := strings.IndexByte(p[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated [")
			}
			b.WriteString(p[i : i+j+1])
			i += j
		case c == '\\' && i+1 < len(p):
			i++
			b.WriteString(regexp.QuoteMeta(string(p[i])))
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// excluded reports whether a context-relative slash path is left out of the build
// context: the last rule that matches the path or one of its parent directories decides.
func excluded(rules []ignoreRule, rel string) bool {
	parts := strings.Split(rel, "/")
	out := false
	for _, r := range rules {
		match := false
		for i := len(parts); i >= 1 && !match; i-- {
			match = r.re.MatchString(strings.Join(parts[:i], "/"))
		}
		if match {
			out = !r.negate
		}
	}
	return out
}

// mayReinclude reports whether some negated rule could bring back a file under an
// excluded directory dir, so the walk has to enter it.
func mayReinclude(rules []ignoreRule, dir string) bool {
	for _, r := range rules {
		if !r.negate {
			continue
		}
		lit := r.pattern
		if i := strings.IndexAny(lit, "*?[\\"); i >= 0 {
			lit = lit[:i]
		}
		if lit == "" || strings.HasPrefix(dir+"/", lit) || strings.HasPrefix(lit, dir+"/") {
			return true
		}
	}
	return false
}

// buildContext copies the repository at root into dst, less what .dockerignore leaves
// out, and returns the context-relative paths copied.
func buildContext(root, dst string) ([]string, error) {
	text, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return nil, err
	}
	rules, err := parseDockerignore(string(text))
	if err != nil {
		return nil, err
	}
	var copied []string
	err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if excluded(rules, rel) {
			if e.IsDir() && !mayReinclude(rules, rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if e.IsDir() || !e.Type().IsRegular() {
			return nil
		}
		copied = append(copied, rel)
		return copyFile(p, filepath.Join(dst, filepath.FromSlash(rel)))
	})
	return copied, err
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyTree copies the directory src into dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		return copyFile(p, filepath.Join(dst, rel))
	})
}

// buildResult is what replaying the Dockerfile produced.
type buildResult struct {
	df        *dockerfile
	version   string // the VERSION build arg given
	rootfs    string // directory standing for the builder stage's "/"
	context   string // the filtered build context
	files     []string
	binary    string // host path of the file the final stage copies from the builder
	imagePath string // where the final stage puts it
	goBuild   string // the RUN command line that runs go build, as written
	modCache  string // the module cache the RUN steps started with empty: what they fetched
	log       string // output of the RUN steps
	err       error
}

var (
	buildOnce sync.Once
	built     buildResult
)

// gatewayBuild replays the Dockerfile once per test binary and fails t if that failed.
func gatewayBuild(t *testing.T) *buildResult {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sse-gateway-docker-*")
		if err != nil {
			built.err = err
			return
		}
		cleanups = append(cleanups, func() { os.RemoveAll(dir) })
		built = replayDockerBuild(repoRoot(), dir)
	})
	if built.err != nil {
		t.Fatalf("replaying the Dockerfile build: %v\n%s", built.err, built.log)
	}
	return &built
}

// cleanups run after all tests (TestMain), for state shared between tests.
var cleanups []func()

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range cleanups {
		f()
	}
	os.Exit(code)
}

func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Dir(wd) // this package is <root>/deploy
}

var runMountFlag = "--mount"

func replayDockerBuild(root, dir string) (res buildResult) {
	res.version = fmt.Sprintf("deploytest-%d", time.Now().UnixNano())
	res.context = filepath.Join(dir, "context")
	res.rootfs = filepath.Join(dir, "rootfs")
	res.modCache = filepath.Join(dir, "gomodcache")
	var logb strings.Builder
	defer func() { res.log = logb.String() }()

	df, err := parseDockerfileFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		res.err = err
		return
	}
	res.df = df
	if res.files, err = buildContext(root, res.context); err != nil {
		res.err = fmt.Errorf("build context: %w", err)
		return
	}

	final := df.final()
	var from instruction
	for _, in := range final.all("COPY") {
		if _, ok := in.flag("from"); ok {
			from = in
		}
	}
	fromStage, _ := from.flag("from")
	builder := df.stage(fromStage)
	if builder == nil {
		res.err = fmt.Errorf("final stage has no COPY --from=<builder stage> (found %q)", fromStage)
		return
	}
	buildArgs := map[string]string{
		"VERSION":        res.version,
		"TARGETOS":       runtime.GOOS,
		"TARGETARCH":     runtime.GOARCH,
		"BUILDPLATFORM":  runtime.GOOS + "/" + runtime.GOARCH,
		"TARGETPLATFORM": runtime.GOOS + "/" + runtime.GOARCH,
	}
	st := df.newState(buildArgs)
	modEnv, err := moduleEnv(hostGoEnv("GOMODCACHE"), res.modCache)
	if err != nil {
		res.err = err
		return
	}
	host := func(p string) string { return filepath.Join(res.rootfs, filepath.FromSlash(p)) }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, in := range builder.instrs {
		if err := st.apply(in); err != nil {
			res.err = err
			return
		}
		switch in.cmd {
		case "ARG", "ENV", "LABEL":
		case "WORKDIR":
			if err := os.MkdirAll(host(st.workdir), 0o755); err != nil {
				res.err = err
				return
			}
		case "COPY":
			if err := replayCopy(in, st, res.context, host); err != nil {
				res.err = err
				return
			}
		case "RUN":
			for _, f := range in.flags {
				if !strings.HasPrefix(f, runMountFlag+"=") {
					res.err = fmt.Errorf("line %d: RUN flag %s is not replayed by this test", in.line, f)
					return
				}
			}
			if _, exec, _ := in.execForm(); exec {
				res.err = fmt.Errorf("line %d: exec-form RUN is not replayed by this test", in.line)
				return
			}
			if strings.Contains(in.args, "go build") {
				res.goBuild = in.args
			}
			fmt.Fprintf(&logb, "RUN %s\n", in.args)
			cmd := exec.CommandContext(ctx, "sh", "-c", in.args)
			cmd.Dir = host(st.workdir)
			cmd.Env = append(runEnv(st), modEnv...)
			cmd.Stdout, cmd.Stderr = &logb, &logb
			if err := cmd.Run(); err != nil {
				res.err = fmt.Errorf("line %d: RUN %s: %w", in.line, in.args, err)
				return
			}
		default:
			res.err = fmt.Errorf("line %d: builder instruction %s is not replayed by this test", in.line, in.cmd)
			return
		}
	}
	args := strings.Fields(expand(from.args, st.vars()))
	if len(args) != 2 {
		res.err = fmt.Errorf("line %d: COPY --from with %d paths, want source and destination", from.line, len(args))
		return
	}
	res.binary, res.imagePath = host(args[0]), args[1]
	if _, err := os.Stat(res.binary); err != nil {
		res.err = fmt.Errorf("the builder did not produce %s that the final stage copies: %w", args[0], err)
	}
	return res
}

// replayCopy copies context paths into the builder file system.
func replayCopy(in instruction, st *stageState, contextDir string, host func(string) string) error {
	if len(in.flags) != 0 {
		return fmt.Errorf("line %d: COPY flags %v are not replayed by this test", in.line, in.flags)
	}
	words := strings.Fields(expand(in.args, st.vars()))
	if len(words) < 2 {
		return fmt.Errorf("line %d: COPY needs a source and a destination", in.line)
	}
	srcs, dst := words[:len(words)-1], words[len(words)-1]
	if !path.IsAbs(dst) {
		dst = path.Join(st.workdir, dst)
	}
	for _, s := range srcs {
		src := filepath.Join(contextDir, filepath.FromSlash(path.Clean(s)))
		fi, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("line %d: COPY %s: not in the build context (.dockerignore?): %w", in.line, s, err)
		}
		if fi.IsDir() {
			if err := copyTree(src, host(dst)); err != nil {
				return err
			}
			continue
		}
		if err := copyFile(src, filepath.Join(host(dst), filepath.Base(src))); err != nil {
			return err
		}
	}
	return nil
}

// hostGoEnv returns `go env name` on the host ("" if it fails).
func hostGoEnv(name string) string {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// moduleEnv points a replayed RUN at the empty module cache dst, downloading offline from the
// host's module cache hostCache (GOPROXY=file://), with writable files so it can be removed.
func moduleEnv(hostCache, dst string) ([]string, error) {
	if hostCache == "" {
		return nil, fmt.Errorf("go env GOMODCACHE: empty")
	}
	return []string{
		"GOMODCACHE=" + dst,
		"GOPROXY=file://" + filepath.ToSlash(filepath.Join(hostCache, "cache", "download")),
		"GOSUMDB=off", // go.sum still checks every download
		"GOFLAGS=-modcacherw",
	}, nil
}

// runEnv is the environment of a replayed RUN: the host's, less what the golang image
// does not set and what would change the build (the host's Go caches stand in for the
// Dockerfile's cache mounts), plus the stage's ARG and ENV values.
func runEnv(st *stageState) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "CGO_ENABLED", k == "GOOS", k == "GOARCH", k == "GOFLAGS", k == "GOEXPERIMENT",
			k == "GOMODCACHE", k == "GOPROXY", k == "GOSUMDB",
			strings.HasPrefix(k, "SSE_GATEWAY_"):
			continue
		}
		env = append(env, kv)
	}
	for k, v := range st.vars() {
		env = append(env, k+"="+v)
	}
	return env
}
