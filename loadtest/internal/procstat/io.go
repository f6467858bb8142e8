package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// ReadRChar returns the bytes pid has read so far through read(2) and friends, from any
// file or socket (rchar of /proc/<pid>/io; readable for a process of the same user).
func ReadRChar(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, fmt.Errorf("read io of pid %d: %w", pid, err)
	}
	return ParseRChar(b)
}

// ParseRChar parses rchar out of the content of /proc/<pid>/io.
func ParseRChar(b []byte) (int64, error) {
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("rchar:")); ok {
			return strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		}
	}
	return 0, fmt.Errorf("no rchar in io")
}
