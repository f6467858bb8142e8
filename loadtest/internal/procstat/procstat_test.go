package procstat

import (
	"os"
	"testing"
	"time"
)

func TestParseStatus(t *testing.T) {
	in := "Name:\tsse-gateway\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t7\n"
	m, err := ParseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 102400*1024 || m.HWM != 204800*1024 || m.Threads != 7 {
		t.Fatalf("got %+v", m)
	}
	if _, err := ParseStatus([]byte("Name:\tx\n")); err == nil {
		t.Fatal("status without VmRSS accepted")
	}
}

func TestParseStatCPU(t *testing.T) {
	// comm with spaces and parentheses; utime=250 stime=50 ticks -> 3 s.
	in := "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 100 1000 200\n"
	d, err := ParseStatCPU([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if d != 3*time.Second {
		t.Fatalf("cpu = %v", d)
	}
	if _, err := ParseStatCPU([]byte("1 (x) S 1 2")); err == nil {
		t.Fatal("short stat accepted")
	}
}

func TestReadSelf(t *testing.T) {
	m, err := ReadMem(os.Getpid())
	if err != nil || m.RSS <= 0 || m.Threads <= 0 {
		t.Fatalf("ReadMem(self) = %+v, %v", m, err)
	}
	if _, err := ReadCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if l, err := LoadAvg1(); err != nil || l < 0 {
		t.Fatalf("LoadAvg1 = %v, %v", l, err)
	}
}

func TestParseSockstat(t *testing.T) {
	in := "sockets: used 12\nTCP: inuse 2 orphan 0 tw 3 alloc 5 mem 7\nUDP: inuse 0 mem 0\n"
	s, err := ParseSockstat([]byte(in))
	if err != nil || s != (Sockstat{InUse: 2, Alloc: 5, MemBytes: 7 * 4096}) {
		t.Fatalf("ParseSockstat = %+v, %v", s, err)
	}
	if _, err := ParseSockstat([]byte("sockets: used 1\n")); err == nil {
		t.Fatal("accepted a sockstat without a TCP line")
	}
	if _, err := ReadSockstat(); err != nil {
		t.Fatal(err)
	}
}

func TestParseSlab(t *testing.T) {
	v, err := ParseSlab([]byte("MemTotal: 100 kB\nSlab:             123 kB\nSReclaimable: 1 kB\n"))
	if err != nil || v != 123<<10 {
		t.Fatalf("ParseSlab = %d, %v", v, err)
	}
	if _, err := ParseSlab([]byte("MemTotal: 1 kB\n")); err == nil {
		t.Fatal("accepted meminfo without Slab")
	}
	if _, err := ReadSlab(); err != nil {
		t.Fatal(err)
	}
}
