package wire

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net/http/httputil"
	"strings"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/hub"
)

// fnv1a32 is an independent FNV-1a 32 so that the golden test does not trust ETagHash.
func fnv1a32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

func TestEncodeGolden(t *testing.T) {
	raw := `{"etag":"\"abc\"","lastModified":1700000000000,"type":"refetchConfig"}`
	p, err := ParsePayload([]byte(raw), 0)
	if err != nil {
		t.Fatal(err)
	}
	if fnv1a32(`"abc"`) != 0xb6413aeb || ETagHash(`"abc"`) != 0xb6413aeb {
		t.Fatalf("ETagHash(%q) = %08x, want b6413aeb (FNV-1a 32)", `"abc"`, ETagHash(`"abc"`))
	}
	got := Encode("dvc_server_abc", p, time.UnixMilli(1700000000123))
	want := "id: 1700000000000-b6413aeb\n" +
		"event: message\n" +
		`data: {"id":"1700000000000-b6413aeb","timestamp":1700000000123,"channel":"dvc_server_abc",` +
		`"data":"{\"etag\":\"\\\"abc\\\"\",\"lastModified\":1700000000000,\"type\":\"refetchConfig\"}","name":"change"}` + "\n" +
		"\n"
	if string(got) != want {
		t.Fatalf("Encode:\n got %q\nwant %q", got, want)
	}
	checkFrameShape(t, got)

	// The envelope's members appear in the contract's order and nothing else is in it.
	var env map[string]json.RawMessage
	data := strings.TrimPrefix(strings.Split(string(got), "\n")[2], "data: ")
	if err := json.Unmarshal([]byte(data), &env); err != nil {
		t.Fatal(err)
	}
	if len(env) != 5 {
		t.Fatalf("envelope has %d members, want 5: %s", len(env), data)
	}
	if string(env["name"]) != `"change"` {
		t.Fatalf("name = %s", env["name"])
	}
}

func TestEncodeHTMLNotEscaped(t *testing.T) {
	// SDKs JSON.parse the data; HTML escaping would still parse, but the contract's bytes are
	// the verbatim payload: '<', '>' and '&' stay as they are.
	p := Payload{ETag: "e", LastModified: 1, Raw: []byte(`{"etag":"e","lastModified":1,"x":"<a&b>"}`)}
	got := Encode("c", p, time.UnixMilli(0))
	if !bytes.Contains(got, []byte(`<a&b>`)) {
		t.Fatalf("HTML characters were escaped: %q", got)
	}
}

// TestEncodeHostileCannotBreakFraming feeds every kind of line break, quote and escape into
// both the channel and the payload: the result is always one event, whose data decodes
// (twice) back to the original.
func TestEncodeHostileCannotBreakFraming(t *testing.T) {
	hostile := []string{
		"a\nb",
		"a\r\nb",
		"a\rb",
		"\n\n",
		"data: x\n\nid: 1\n\nevent: error\n\n",
		"a\u2028b\u2029c",
		"\u0085next line",
		`quote " and backslash \ and \" and \\`,
		"\x00\x01\x1f\x7f",
		"\t tab",
		": comment\n",
		"retry: 1\n",
		"é日本語🙂",
	}
	for _, s := range hostile {
		inner, err := json.Marshal(map[string]any{"etag": `"` + s + `"`, "lastModified": 1700000000000, "note": s})
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParsePayload(inner, 0)
		if err != nil {
			t.Fatalf("ParsePayload(%q): %v", inner, err)
		}
		channel := "ch" + s
		frame := Encode(channel, p, time.UnixMilli(42))
		checkFrameShape(t, frame)

		// Two frames back to back are exactly two events.
		events, fields := parseSSE(t, append(append([]byte{}, frame...), frame...))
		if len(events) != 2 || fields != 6 {
			t.Fatalf("%q: parsed %d events, %d field lines, want 2 and 6:\n%q", s, len(events), fields, frame)
		}
		ev := events[0]
		if ev.Event != "message" || ev.ID != p.ID() {
			t.Fatalf("%q: event %+v", s, ev)
		}
		var env struct {
			ID        string `json:"id"`
			Timestamp int64  `json:"timestamp"`
			Channel   string `json:"channel"`
			Data      string `json:"data"`
			Name      string `json:"name"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &env); err != nil {
			t.Fatalf("%q: data is not JSON: %v", s, err)
		}
		if env.ID != ev.ID || env.Timestamp != 42 || env.Channel != channel || env.Name != "change" {
			t.Fatalf("%q: envelope %+v", s, env)
		}
		var got, want any
		if err := json.Unmarshal([]byte(env.Data), &got); err != nil {
			t.Fatalf("%q: inner data is not JSON: %v", s, err)
		}
		_ = json.Unmarshal(inner, &want)
		if !jsonEqual(got, want) {
			t.Fatalf("%q: inner round trip: got %v want %v", s, got, want)
		}
		if env.Data != string(p.Raw) {
			t.Fatalf("%q: inner string %q, want the compacted payload %q", s, env.Data, p.Raw)
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestEventIDRoundTrip(t *testing.T) {
	cases := []hub.Version{
		{},
		{Time: 0, Tie: 0xffffffff},
		{Time: 1, Tie: 1},
		{Time: 1700000000000, Tie: 0xb6413aeb},
		{Time: math.MaxInt64, Tie: 0x80000000},
		{Time: 999999999999999, Tie: 0x0000000f},
	}
	for _, v := range cases {
		id := EventID(v)
		if strings.ContainsAny(id, "\r\n :") {
			t.Fatalf("EventID(%v) = %q has a framing character", v, id)
		}
		got, ok := ParseEventID(id)
		if !ok || got != v {
			t.Fatalf("ParseEventID(EventID(%v) = %q) = %v, %v", v, id, got, ok)
		}
	}
	if got := EventID(hub.Version{Time: 1700000000000, Tie: 0xb6413aeb}); got != "1700000000000-b6413aeb" {
		t.Fatalf("EventID = %q", got)
	}
	if got := EventID(hub.Version{Time: 5, Tie: 0xa}); got != "5-0000000a" {
		t.Fatalf("EventID pads the hash to 8 digits: %q", got)
	}
}

func TestParseEventIDRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"abc",
		"1",
		"1-",
		"-00000000",
		"1-0000000",    // 7 hex digits
		"1-000000000",  // 9 hex digits
		"-1-00000000",  // negative
		"+1-00000000",  // sign
		"1-0000000g",   // not hex
		"1-ABCDEF01",   // upper case is never written
		"1x-00000000",  // not a number
		" 1-00000000",  // space
		"1-00000000 ",  // trailing space
		"1-00000000\n", // newline
		"1-0000\n000",  // newline inside
		"1_00000000a",  // no dash
		"1700000000000-00000000-1",
		"99999999999999999999-00000000", // overflows int64
		"1.5-00000000",
		strings.Repeat("1", 100) + "-00000000",
		"0x10-00000000",
	} {
		if v, ok := ParseEventID(s); ok {
			t.Errorf("ParseEventID(%q) = %v, true; want rejected", s, v)
		}
	}
}

func TestChunkFraming(t *testing.T) {
	frames := [][]byte{
		[]byte(":\n\n"),
		Encode("c", Payload{ETag: "e", LastModified: 1, Raw: []byte(`{"etag":"e","lastModified":1}`)}, time.UnixMilli(1)),
		bytes.Repeat([]byte("x"), 4095),
		bytes.Repeat([]byte("y"), 70000),
	}
	var stream bytes.Buffer
	for _, f := range frames {
		c := Chunk(f)
		head, rest, ok := bytes.Cut(c, []byte("\r\n"))
		if !ok || !bytes.HasSuffix(rest, []byte("\r\n")) || !bytes.Equal(rest[:len(rest)-2], f) {
			t.Fatalf("Chunk(%d bytes) = %q...", len(f), c[:min(len(c), 40)])
		}
		if string(head) != strings.ToLower(string(head)) || len(head) == 0 {
			t.Fatalf("chunk size line %q", head)
		}
		stream.Write(c)
	}
	stream.Write(ChunkTerminator)
	// A real chunked decoder reads back exactly the frames, and ends cleanly.
	got, err := io.ReadAll(httputil.NewChunkedReader(bufio.NewReader(&stream)))
	if err != nil {
		t.Fatalf("chunked decode: %v", err)
	}
	if !bytes.Equal(got, bytes.Join(frames, nil)) {
		t.Fatalf("chunked decode returned %d bytes, want %d", len(got), len(bytes.Join(frames, nil)))
	}
	if string(ChunkTerminator) != "0\r\n\r\n" {
		t.Fatalf("ChunkTerminator = %q", ChunkTerminator)
	}
}

func TestRetryFrame(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{1500 * time.Millisecond, "retry: 1500\n\n"},
		{0, "retry: 0\n\n"},
		{-time.Second, "retry: 0\n\n"},
		{5 * time.Second, "retry: 5000\n\n"},
	} {
		got := Retry(c.d)
		if string(got) != c.want {
			t.Errorf("Retry(%v) = %q, want %q", c.d, got, c.want)
		}
		events, fields := parseSSE(t, got)
		if len(events) != 0 || fields != 1 {
			t.Errorf("Retry(%v) parses as %d events, %d fields", c.d, len(events), fields)
		}
	}
	if string(Heartbeat) != ":\n\n" {
		t.Fatalf("Heartbeat = %q", Heartbeat)
	}
}

func TestNewMessage(t *testing.T) {
	p, err := ParsePayload([]byte(`{"etag":"\"v2\"","lastModified":1700000000001}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	recv := time.UnixMilli(1700000000500)
	m := NewMessage("dvc_client_x", p, recv)
	if m.Channel != "dvc_client_x" || m.ID != p.ID() || m.Version != p.Version() {
		t.Fatalf("message %+v", m)
	}
	if m.Version != (hub.Version{Time: 1700000000001, Tie: fnv1a32(`"v2"`)}) {
		t.Fatalf("version %+v", m.Version)
	}
	if !bytes.Equal(m.Frame, Encode("dvc_client_x", p, recv)) || !bytes.Equal(m.Chunk, Chunk(m.Frame)) {
		t.Fatal("Frame/Chunk do not match Encode/Chunk")
	}
	if !m.Received.Equal(recv) || m.LastModified.UnixMilli() != 1700000000001 {
		t.Fatalf("times %v %v", m.Received, m.LastModified)
	}
	checkFrameShape(t, m.Frame)
}

func TestVersionOrdersByTimeThenETagHash(t *testing.T) {
	a := Payload{ETag: "a", LastModified: 10}
	b := Payload{ETag: "b", LastModified: 10}
	c := Payload{ETag: "a", LastModified: 11}
	if a.Version().Less(b.Version()) == b.Version().Less(a.Version()) {
		t.Fatal("two ETags at the same millisecond must order one way")
	}
	if !a.Version().Less(c.Version()) || !b.Version().Less(c.Version()) {
		t.Fatal("a later lastModified must be newer whatever the ETag")
	}
}
