package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sse-gateway/sse-gateway/internal/gateway"
)

// TestOperationsFlagTable keeps the flag reference in docs/OPERATIONS.md identical to the
// flag definitions, so the documentation can never drift from the binary.
func TestOperationsFlagTable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/OPERATIONS.md")
	if err != nil {
		t.Fatalf("read docs/OPERATIONS.md: %v", err)
	}
	const begin, end = "<!-- flags:begin -->\n", "<!-- flags:end -->"
	i, j := bytes.Index(doc, []byte(begin)), bytes.Index(doc, []byte(end))
	if i < 0 || j < i {
		t.Fatalf("docs/OPERATIONS.md lacks the %q ... %q markers", strings.TrimSpace(begin), end)
	}
	got := string(doc[i+len(begin) : j])
	var want strings.Builder
	writeFlagTable(&want)
	if got != want.String() {
		t.Errorf("docs/OPERATIONS.md flag table is out of date: run scripts/gen-docs\n--- doc ---\n%s\n--- flags ---\n%s", got, want.String())
	}
}

// TestArchitectureNamesExist keeps docs/ARCHITECTURE.md true to the tree: every file it
// names exists, and every function named after a file ("stream/loop.go: run") is declared
// in that file.
func TestArchitectureNamesExist(t *testing.T) {
	doc, err := os.ReadFile("../../docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	ref := regexp.MustCompile(`(?:internal/)?\b([a-z]+/[a-z_]+\.go)(?::((?: ?[A-Za-z]+,?)+))?`)
	refs := ref.FindAllStringSubmatch(string(doc), -1)
	if len(refs) < 10 {
		t.Fatalf("docs/ARCHITECTURE.md names %d files; the parser or the page is wrong", len(refs))
	}
	for _, m := range refs {
		src, err := os.ReadFile(filepath.Join("../../internal", m[1]))
		if err != nil {
			t.Errorf("docs/ARCHITECTURE.md names %s: %v", m[1], err)
			continue
		}
		for _, fn := range strings.FieldsFunc(m[2], func(r rune) bool { return r == ',' || r == ' ' }) {
			decl := regexp.MustCompile(`(?m)^func (\([^)]*\) )?` + regexp.QuoteMeta(fn) + `\(`)
			if !decl.Match(src) {
				t.Errorf("docs/ARCHITECTURE.md names %s in %s, which declares no such function", fn, m[1])
			}
		}
	}
}

// TestReadmeLayoutMatchesTree: the README's layout lists every package directory under
// internal/, and nothing that is not there.
func TestReadmeLayoutMatchesTree(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^internal/([a-z]+)/ `).FindAllStringSubmatch(string(readme), -1) {
		listed[m[1]] = true
	}
	entries, err := os.ReadDir("../../internal")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() && !listed[e.Name()] {
			t.Errorf("internal/%s is missing from the README's layout", e.Name())
		}
		delete(listed, e.Name())
	}
	for name := range listed {
		t.Errorf("the README's layout lists internal/%s, which does not exist", name)
	}
}

// TestHelpNamesNoBogusTypes: the flag package prints a backquoted word of a usage string as
// the flag's type (`-keys-redis sse-gateway keys`), so usages quote nothing with backquotes.
func TestHelpNamesNoBogusTypes(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	serveFlags(fs, &gateway.Config{})
	fs.VisitAll(func(f *flag.Flag) {
		if name, _ := flag.UnquoteUsage(f); name != "" && name != "string" && name != "int" && name != "duration" && name != "float" && name != "value" {
			t.Errorf("--help prints -%s %s: a backquoted word in its usage became its type", f.Name, name)
		}
	})
}
