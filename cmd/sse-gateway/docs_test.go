package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
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
