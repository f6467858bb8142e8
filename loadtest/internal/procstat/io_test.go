package procstat

import (
	"os"
	"testing"
)

func TestParseRChar(t *testing.T) {
	in := "rchar: 1412404\nwchar: 99\nsyscr: 10\nsyscw: 2\nread_bytes: 0\n"
	if n, err := ParseRChar([]byte(in)); err != nil || n != 1412404 {
		t.Fatalf("ParseRChar = %d, %v; want 1412404", n, err)
	}
	if _, err := ParseRChar([]byte("wchar: 1\n")); err == nil {
		t.Fatal("io without rchar accepted")
	}
	// A process can read its own /proc/<pid>/io.
	if _, err := ReadRChar(os.Getpid()); err != nil {
		t.Fatalf("ReadRChar(self): %v", err)
	}
}
