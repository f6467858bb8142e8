package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// IO is what a process has read and written so far through read(2)/write(2) and friends,
// to any file or socket (/proc/<pid>/io).
type IO struct {
	RChar, WChar int64
}

// ReadIO reads /proc/<pid>/io (readable for a process of the same user).
func ReadIO(pid int) (IO, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return IO{}, fmt.Errorf("read io of pid %d: %w", pid, err)
	}
	return ParseIO(b)
}

// ParseIO parses rchar and wchar out of the content of /proc/<pid>/io.
func ParseIO(b []byte) (IO, error) {
	var io IO
	found := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			continue
		}
		switch string(k) {
		case "rchar":
			io.RChar = n
			found++
		case "wchar":
			io.WChar = n
			found++
		}
	}
	if found != 2 {
		return io, fmt.Errorf("no rchar and wchar in io")
	}
	return io, nil
}
