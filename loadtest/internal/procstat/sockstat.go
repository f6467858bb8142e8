package procstat

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// pageSize is the unit of the mem fields of /proc/net/sockstat: pages of 4 KiB on the
// machines this kit runs on (x86-64, arm64 with 4 KiB pages).
const pageSize = 4096

// Sockstat is the TCP line of /proc/net/sockstat: the kernel's socket figures for the
// whole host (network namespace), both ends of every loopback connection included.
type Sockstat struct {
	InUse    int64 // TCP sockets in use
	Alloc    int64 // TCP sockets allocated
	MemBytes int64 // memory the kernel holds in TCP socket buffers (mem pages × 4 KiB)
}

// ReadSockstat reads /proc/net/sockstat.
func ReadSockstat() (Sockstat, error) {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return Sockstat{}, fmt.Errorf("read sockstat: %w", err)
	}
	return ParseSockstat(b)
}

// ParseSockstat parses the content of /proc/net/sockstat.
func ParseSockstat(b []byte) (Sockstat, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		var s Sockstat
		seen := 0
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil {
				return Sockstat{}, fmt.Errorf("sockstat: %q: %w", f[i], err)
			}
			switch f[i] {
			case "inuse":
				s.InUse, seen = v, seen+1
			case "alloc":
				s.Alloc, seen = v, seen+1
			case "mem":
				s.MemBytes, seen = v*pageSize, seen+1
			}
		}
		if seen != 3 {
			return Sockstat{}, fmt.Errorf("sockstat: TCP line %q lacks inuse, alloc or mem", sc.Text())
		}
		return s, nil
	}
	return Sockstat{}, fmt.Errorf("sockstat: no TCP line")
}

// ReadSlab reads the Slab line of /proc/meminfo (bytes): the kernel's object caches, where
// a socket's own structures (not its buffers) live.
func ReadSlab() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("read meminfo: %w", err)
	}
	return ParseSlab(b)
}

// ParseSlab parses the Slab line of /proc/meminfo content, in bytes.
func ParseSlab(b []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Slab:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("meminfo: bad Slab line %q", sc.Text())
			}
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("meminfo: %w", err)
			}
			return v << 10, nil
		}
	}
	return 0, fmt.Errorf("meminfo: no Slab line")
}
