// Package docs holds the checks of the documentation's measured figures.
//
// The rule: every figure measured by running something sits in a block of a page under docs/
// (or the README) that names the commit it was measured at, the paths of the code it
// depends on, and the command that measures it:
//
//	<!-- figure: reliability-quick
//	measured: 0123abc
//	paths: cmd internal reliability
//	run: go test -race -count=1 -json ./reliability
//	format: gotest
//	-->
//	```text
//	... what the command printed ...
//	```
//	<!-- /figure -->
//
// TestFiguresAreFresh fails when a figure's commit is not an ancestor of HEAD, or when a file
// under its paths changed after that commit. Under a directory only the code counts (not
// *_test.go, testdata/ or *.md files, which change no figure), unless the path names the
// file itself or ends in /** (everything under it): tests that measure a figure list their
// own files, or their directory as reliability/**. The failure names the command that
// re-records the figure:
//
//	make record FIGURE=<name>      # or `make record` for every figure
//
// which runs each figure's command at HEAD (refusing a work tree with changes under its
// paths, so the commit named is what ran) and writes the block and its commit back. The
// formats: gotest, a `go test -json` run whose log lines (t.Logf) are the figure, prefixed
// with their test's name; text, the command's standard output as it is; doc, a command that
// rewrites the page itself (make bench writes PERFORMANCE.md), whose block is left to it.
package docs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// pages are the files whose figures are checked, relative to the repository root.
var pages = []string{"README.md", "docs/ARCHITECTURE.md", "docs/CLIENTS.md", "docs/OPERATIONS.md", "docs/PERFORMANCE.md", "docs/RELIABILITY.md"}

// figure is one recorded figure of a page.
type figure struct {
	page, name, measured, run, format string
	paths                             []string
	line                              int // of the marker, 1-based
	// start and end are the byte offsets of the block's content: after the marker's
	// closing "-->\n", up to "<!-- /figure -->".
	start, end int
}

var markerRE = regexp.MustCompile(`(?s)<!-- figure: ([a-z0-9-]+)\n(.*?)-->\n`)

// parseFigures reads the figure blocks of a page.
func parseFigures(page string, text []byte) ([]figure, error) {
	var out []figure
	for _, m := range markerRE.FindAllSubmatchIndex(text, -1) {
		f := figure{page: page, name: string(text[m[2]:m[3]]), line: 1 + bytes.Count(text[:m[0]], []byte("\n")), start: m[1]}
		for _, l := range strings.Split(strings.TrimSpace(string(text[m[4]:m[5]])), "\n") {
			k, v, ok := strings.Cut(l, ":")
			v = strings.TrimSpace(v)
			switch {
			case !ok:
				return nil, fmt.Errorf("%s:%d: figure %s: line %q is not key: value", page, f.line, f.name, l)
			case k == "measured":
				f.measured = v
			case k == "paths":
				f.paths = strings.Fields(v)
			case k == "run":
				f.run = v
			case k == "format":
				f.format = v
			default:
				return nil, fmt.Errorf("%s:%d: figure %s: unknown key %q", page, f.line, f.name, k)
			}
		}
		end := bytes.Index(text[f.start:], []byte("<!-- /figure -->"))
		if end < 0 {
			return nil, fmt.Errorf("%s:%d: figure %s has no <!-- /figure --> after it", page, f.line, f.name)
		}
		f.end = f.start + end
		if f.measured == "" || len(f.paths) == 0 || f.run == "" || !slices.Contains([]string{"gotest", "text", "doc"}, f.format) {
			return nil, fmt.Errorf("%s:%d: figure %s needs measured, paths, run and a format of gotest, text or doc", page, f.line, f.name)
		}
		out = append(out, f)
	}
	return out, nil
}

// allFigures reads every page's figures; names are unique across pages.
func allFigures(t *testing.T, root string) []figure {
	t.Helper()
	var all []figure
	seen := map[string]string{}
	for _, p := range pages {
		text, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		figs, err := parseFigures(p, text)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range figs {
			if other, dup := seen[f.name]; dup {
				t.Fatalf("figure %s is in %s and %s: names must be unique", f.name, other, p)
			}
			seen[f.name] = p
		}
		all = append(all, figs...)
	}
	return all
}

// git runs git in root and returns its trimmed output.
func git(root string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// staleFiles lists the files under f's paths that changed between its commit and HEAD and
// can change the figure.
func staleFiles(root string, f figure) ([]string, error) {
	out, err := git(root, append([]string{"diff", "--name-only", f.measured, "HEAD", "--"}, f.paths...)...)
	if err != nil {
		return nil, fmt.Errorf("git diff %s HEAD: %v: %s", f.measured, err, out)
	}
	var stale []string
	for _, file := range strings.Fields(out) {
		named := slices.ContainsFunc(f.paths, func(p string) bool {
			dir, all := strings.CutSuffix(p, "/**")
			return p == file || all && strings.HasPrefix(file, dir+"/")
		})
		if !named && (strings.HasSuffix(file, "_test.go") || strings.Contains(file, "/testdata/") || strings.HasSuffix(file, ".md")) {
			continue
		}
		stale = append(stale, file)
	}
	return stale, nil
}

// problem says what is wrong with a figure's commit, or "".
func problem(root string, f figure) string {
	rerun := fmt.Sprintf("rerun `make record FIGURE=%s` (it runs: %s)", f.name, f.run)
	if !regexp.MustCompile(`^[0-9a-f]{7,40}$`).MatchString(f.measured) {
		return fmt.Sprintf("measured %q is not a commit (never recorded, or recorded from a work tree with uncommitted changes): %s", f.measured, rerun)
	}
	if out, err := git(root, "cat-file", "-e", f.measured+"^{commit}"); err != nil {
		return fmt.Sprintf("commit %s is not in this repository (%s; a shallow clone needs `git fetch --unshallow`): %s", f.measured, out, rerun)
	}
	if _, err := git(root, "merge-base", "--is-ancestor", f.measured, "HEAD"); err != nil {
		return fmt.Sprintf("commit %s is not an ancestor of HEAD (measured on another branch, or history was rewritten): %s", f.measured, rerun)
	}
	stale, err := staleFiles(root, f)
	if err != nil {
		return err.Error()
	}
	if len(stale) > 0 {
		if len(stale) > 8 {
			stale = append(stale[:8], "...")
		}
		return fmt.Sprintf("measured at %s, and the code it depends on changed since (%s): %s", f.measured, strings.Join(stale, " "), rerun)
	}
	return ""
}

// TestFiguresAreFresh: every figure names a commit of this history, after which none of the
// code it depends on changed.
func TestFiguresAreFresh(t *testing.T) {
	root := ".."
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("this test reads the repository's history: git is needed: %v", err)
	}
	figs := allFigures(t, root)
	if len(figs) == 0 {
		t.Fatal("no figure blocks found: the parser or the pages are wrong")
	}
	for _, f := range figs {
		if p := problem(root, f); p != "" {
			t.Errorf("%s:%d: figure %s: %s", f.page, f.line, f.name, p)
		}
	}
}

// TestParseFigures: the marker format, and what makes a figure stale.
func TestParseFigures(t *testing.T) {
	page := "intro\n<!-- figure: demo-one\nmeasured: abc1234\npaths: internal/stream reliability/slow_test.go\nrun: go test -json ./x\nformat: gotest\n-->\n```text\nold\n```\n<!-- /figure -->\ntail\n"
	figs, err := parseFigures("p.md", []byte(page))
	if err != nil || len(figs) != 1 {
		t.Fatalf("parse = %v, %v", figs, err)
	}
	f := figs[0]
	if f.name != "demo-one" || f.measured != "abc1234" || f.line != 2 || f.format != "gotest" ||
		!slices.Equal(f.paths, []string{"internal/stream", "reliability/slow_test.go"}) || page[f.start:f.end] != "```text\nold\n```\n" {
		t.Fatalf("parsed %+v, block %q", f, page[f.start:f.end])
	}
	for _, bad := range []string{
		"<!-- figure: x\nmeasured: a\n-->\n<!-- /figure -->",                                            // no paths, run, format
		"<!-- figure: x\nmeasured: a\npaths: p\nrun: r\nformat: gotest\n-->\nno end",                    // no end marker
		"<!-- figure: x\nmeasured: a\npaths: p\nrun: r\nformat: html\n-->\n<!-- /figure -->",            // unknown format
		"<!-- figure: x\nmeasured: a\npaths: p\nrun: r\nformat: text\nowner: me\n-->\n<!-- /figure -->", // unknown key
	} {
		if _, err := parseFigures("p.md", []byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	// Staleness, on this repository's own history: HEAD itself is fresh; a figure whose
	// commit is not a commit, or whose paths changed since its commit, is not.
	root := ".."
	head, err := git(root, "rev-parse", "--short", "HEAD")
	if err != nil {
		t.Fatalf("git rev-parse: %v: %s", err, head)
	}
	if p := problem(root, figure{name: "x", measured: head, paths: []string{"internal"}, run: "r"}); p != "" {
		t.Errorf("a figure measured at HEAD: %s", p)
	}
	if p := problem(root, figure{name: "x", measured: head + " (with uncommitted changes)", paths: []string{"internal"}, run: "r"}); !strings.Contains(p, "not a commit") {
		t.Errorf("a dirty measurement: %q", p)
	}
	first, err := git(root, "rev-list", "--max-parents=0", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	first = strings.Fields(first)[0]
	if p := problem(root, figure{name: "x", measured: first, paths: []string{"internal/stream"}, run: "r"}); !strings.Contains(p, "internal/stream/") || !strings.Contains(p, "make record FIGURE=x") {
		t.Errorf("a figure measured at the first commit, on code changed since: %q", p)
	}
	// Tests and docs under a directory change no figure; a test named by its path does.
	stale, err := staleFiles(root, figure{measured: first, paths: []string{"docs"}})
	if err != nil || slices.ContainsFunc(stale, func(f string) bool { return strings.HasSuffix(f, ".md") || strings.HasSuffix(f, "_test.go") }) {
		t.Errorf("stale files under docs since the first commit: %v, %v; docs and tests should not count", stale, err)
	}
	stale, _ = staleFiles(root, figure{measured: first, paths: []string{"internal/stream/slow_test.go"}})
	if !slices.Equal(stale, []string{"internal/stream/slow_test.go"}) {
		t.Errorf("a test named by its path: stale %v, want it", stale)
	}
	stale, _ = staleFiles(root, figure{measured: first, paths: []string{"internal/stream/**"}})
	if !slices.Contains(stale, "internal/stream/slow_test.go") {
		t.Errorf("internal/stream/**: stale %v, want its tests too", stale)
	}
}

// The recorder: `go test ./docs -args -record [-figure name]` (make record).
var (
	record     = flag.Bool("record", false, "re-record the figures (make record) instead of testing")
	recordOnly = flag.String("figure", "", "with -record: only this figure")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if *record {
		if err := recordFigures("..", *recordOnly); err != nil {
			fmt.Fprintln(os.Stderr, "record:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// recordFigures runs each figure's command (or only the one named) at HEAD and writes its
// output and HEAD's commit into its page.
func recordFigures(root, only string) error {
	head, err := git(root, "rev-parse", "--short", "HEAD")
	if err != nil {
		return fmt.Errorf("git rev-parse: %v: %s", err, head)
	}
	done := 0
	for _, page := range pages {
		path := filepath.Join(root, page)
		text, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		figs, err := parseFigures(page, text)
		if err != nil {
			return err
		}
		for _, f := range figs {
			if only != "" && f.name != only {
				continue
			}
			if dirty, _ := git(root, append([]string{"status", "--porcelain", "--"}, f.paths...)...); dirty != "" {
				return fmt.Errorf("figure %s: uncommitted changes under %s:\n%s\ncommit them first: a figure names the commit it ran on", f.name, strings.Join(f.paths, " "), dirty)
			}
			fmt.Fprintf(os.Stderr, "== figure %s (%s): %s\n", f.name, page, f.run)
			load0 := loadAverage()
			cmd := exec.Command("sh", "-c", f.run)
			cmd.Dir, cmd.Stderr = root, os.Stderr
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("figure %s: %s: %v\n%s", f.name, f.run, err, tail(plainOutput(out)))
			}
			// The command may have rewritten the page (format doc): read it again.
			if text, err = os.ReadFile(path); err != nil {
				return err
			}
			cur, err := parseFigures(page, text)
			if err != nil {
				return err
			}
			i := slices.IndexFunc(cur, func(c figure) bool { return c.name == f.name })
			if i < 0 {
				return fmt.Errorf("figure %s vanished from %s", f.name, page)
			}
			f = cur[i]
			block := text[f.start:f.end]
			// The machine the figure was measured on, in the block's first line.
			goVersion, _ := exec.Command("go", "env", "GOVERSION").Output()
			header := fmt.Sprintf("# %s, %s, %d CPUs, load average %s -> %s, `%s`\n", time.Now().UTC().Format("2006-01-02"),
				strings.TrimSpace(string(goVersion)), runtime.NumCPU(), load0, loadAverage(), f.run)
			switch f.format {
			case "gotest":
				lines, err := goTestLogs(out)
				if err != nil {
					return fmt.Errorf("figure %s: %v", f.name, err)
				}
				block = []byte("```text\n" + header + lines + "```\n")
			case "text":
				block = []byte("```text\n" + header + strings.TrimRight(string(out), "\n") + "\n```\n")
			}
			marker := text[:f.start]
			j := bytes.LastIndex(marker, []byte("\nmeasured: "))
			k := j + 1 + bytes.IndexByte(marker[j+1:], '\n')
			rewritten := append(append(append(append([]byte{}, marker[:j]...), "\nmeasured: "+head...), marker[k:]...), block...)
			text = append(rewritten, text[f.end:]...)
			if err := os.WriteFile(path, text, 0o644); err != nil {
				return err
			}
			done++
		}
	}
	if done == 0 {
		return fmt.Errorf("no figure named %q", only)
	}
	fmt.Fprintf(os.Stderr, "recorded %d figure(s) at %s; review the diff and commit the pages\n", done, head)
	return nil
}

// goTestLogs extracts the t.Logf lines of a `go test -json` run, each prefixed with its
// test's name (continuation lines kept under it).
func goTestLogs(out []byte) (string, error) {
	var b strings.Builder
	logLine := regexp.MustCompile(`^\s+[A-Za-z0-9_]+_test\.go:\d+: (.*)$`)
	inLog := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	n := 0
	for sc.Scan() {
		var ev struct {
			Action, Test, Output string
			Elapsed              float64
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Test == "" {
			continue
		}
		if ev.Action == "pass" && !strings.Contains(ev.Test, "/") {
			fmt.Fprintf(&b, "%s: passed in %.1fs\n", ev.Test, ev.Elapsed)
			continue
		}
		if ev.Action != "output" {
			continue
		}
		line := strings.TrimRight(ev.Output, "\n")
		if m := logLine.FindStringSubmatch(line); m != nil {
			fmt.Fprintf(&b, "%s: %s\n", ev.Test, m[1])
			inLog[ev.Test] = true
			n++
		} else if inLog[ev.Test] && strings.HasPrefix(line, "        ") && strings.TrimSpace(line) != "" {
			fmt.Fprintf(&b, "    %s\n", strings.TrimSpace(line))
		} else {
			inLog[ev.Test] = false
		}
	}
	if n == 0 {
		return "", fmt.Errorf("the run logged nothing (is it go test -json -v?)")
	}
	return b.String(), nil
}

// plainOutput is a `go test -json` run's output as text (other output as it is).
func plainOutput(out []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(out, []byte("\n")) {
		var ev struct{ Action, Output string }
		if json.Unmarshal(line, &ev) == nil && ev.Action != "" {
			b.WriteString(ev.Output)
		} else if len(line) > 0 {
			b.Write(append(line, '\n'))
		}
	}
	return b.Bytes()
}

func tail(b []byte) string {
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// loadAverage is the one-minute load average (/proc/loadavg), or "?".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}
