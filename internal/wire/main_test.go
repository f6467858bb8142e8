package wire

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// sseEvent is one dispatched event of an SSE stream, as a spec-compliant parser sees it.
type sseEvent struct {
	ID    string
	Event string
	Data  string
	Retry string
}

// parseSSE parses a stream the way the WHATWG EventSource algorithm does: lines end at CRLF,
// LF or CR; a line starting with ':' is a comment; "field: value" loses one leading space
// after the colon; a blank line dispatches the event (only when it has data). It also returns
// the number of field lines seen, so that a test can tell a frame grew an extra line.
func parseSSE(t testing.TB, stream []byte) (events []sseEvent, fieldLines int) {
	t.Helper()
	var cur sseEvent
	var data []string
	s := string(stream)
	for len(s) > 0 {
		i := strings.IndexAny(s, "\r\n")
		if i < 0 {
			t.Fatalf("stream ends inside a line: %q", s)
		}
		line := s[:i]
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			s = s[i+2:]
		} else {
			s = s[i+1:]
		}
		switch {
		case line == "":
			if data != nil {
				cur.Data = strings.Join(data, "\n")
				events = append(events, cur)
			}
			cur, data = sseEvent{}, nil
			continue
		case line[0] == ':':
			continue
		}
		fieldLines++
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			cur.ID = value
		case "event":
			cur.Event = value
		case "data":
			data = append(data, value)
		case "retry":
			cur.Retry = value
		}
	}
	return events, fieldLines
}

// checkFrameShape asserts the structural invariant of every event frame: exactly three
// field lines (id, event, data) ended by LF, then one blank line, and no other line break of
// any kind (CR, or the JavaScript line separators some SSE polyfills split on).
func checkFrameShape(t testing.TB, frame []byte) {
	t.Helper()
	if bytes.IndexByte(frame, '\r') >= 0 {
		t.Fatalf("frame contains CR: %q", frame)
	}
	if bytes.Contains(frame, []byte("\u2028")) || bytes.Contains(frame, []byte("\u2029")) {
		t.Fatalf("frame contains a raw U+2028/U+2029: %q", frame)
	}
	lines := bytes.Split(frame, []byte("\n"))
	// "a\nb\nc\n\n" splits into a, b, c, "", "".
	if len(lines) != 5 || len(lines[3]) != 0 || len(lines[4]) != 0 {
		t.Fatalf("frame is not 3 lines + blank line: %q", frame)
	}
	for i, prefix := range []string{"id: ", "event: message", "data: {"} {
		if !bytes.HasPrefix(lines[i], []byte(prefix)) {
			t.Fatalf("line %d = %q, want prefix %q", i, lines[i], prefix)
		}
	}
	if string(lines[1]) != "event: message" {
		t.Fatalf("event line = %q", lines[1])
	}
}
