package procstat

import (
	"os"
	"testing"
)

func TestParseIO(t *testing.T) {
	in := "rchar: 1412404\nwchar: 99\nsyscr: 10\nsyscw: 2\nread_bytes: 0\n"
	if io, err := ParseIO([]byte(in)); err != nil || io != (IO{RChar: 1412404, WChar: 99}) {
		t.Fatalf("ParseIO = %+v, %v; want rchar 1412404, wchar 99", io, err)
	}
	if _, err := ParseIO([]byte("wchar: 1\n")); err == nil {
		t.Fatal("io without rchar accepted")
	}
	// A process can read its own /proc/<pid>/io.
	if _, err := ReadIO(os.Getpid()); err != nil {
		t.Fatalf("ReadIO(self): %v", err)
	}
}
