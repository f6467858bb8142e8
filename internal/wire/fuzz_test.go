package wire

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sse-gateway/sse-gateway/internal/hub"
)

// FuzzEncode: whatever the channel, ETag and payload bytes, a frame is exactly three field
// lines and a blank line, parses as exactly one "message" event, and carries the payload
// back out through two JSON decodes.
func FuzzEncode(f *testing.F) {
	f.Add("dvc_server_abc", `"abc"`, int64(1700000000000), []byte(`{"etag":"\"abc\"","lastModified":1700000000000}`), int64(1700000000123))
	f.Add("a\nb", "e\r\n", int64(0), []byte("{\"x\":\"\n\r\u2028\u2029\"}"), int64(0))
	f.Add("ch", "e", int64(-5), []byte("not json\n\ndata: evil\n\n"), int64(-1))
	f.Add("\xff\xfe", "\x00", int64(1<<62), []byte("\xc3\x28"), int64(1))
	f.Add("", "", int64(1), []byte(``), int64(1))
	f.Add("c", `\"`, int64(7), []byte(`"\\\""`), int64(7))
	f.Fuzz(func(t *testing.T, channel, etag string, lm int64, raw []byte, recvMs int64) {
		p := Payload{ETag: etag, LastModified: lm, Raw: raw}
		frame := Encode(channel, p, time.UnixMilli(recvMs))
		checkFrameShape(t, frame)
		events, fields := parseSSE(t, frame)
		if len(events) != 1 || fields != 3 {
			t.Fatalf("%d events, %d fields: %q", len(events), fields, frame)
		}
		ev := events[0]
		if ev.Event != "message" || ev.ID != p.ID() {
			t.Fatalf("event %+v", ev)
		}
		var env struct {
			ID        string `json:"id"`
			Timestamp int64  `json:"timestamp"`
			Channel   string `json:"channel"`
			Data      string `json:"data"`
			Name      string `json:"name"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &env); err != nil {
			t.Fatalf("data line is not JSON: %v", err)
		}
		if env.ID != ev.ID || env.Name != "change" || env.Timestamp != time.UnixMilli(recvMs).UnixMilli() {
			t.Fatalf("envelope %+v", env)
		}
		// JSON cannot carry invalid UTF-8; valid input must come back byte for byte.
		if utf8.ValidString(channel) && env.Channel != channel {
			t.Fatalf("channel %q came back as %q", channel, env.Channel)
		}
		if utf8.Valid(raw) && env.Data != string(raw) {
			t.Fatalf("payload %q came back as %q", raw, env.Data)
		}
		// When the payload is a valid one, the inner string is itself JSON (the second decode).
		if _, err := ParsePayload(raw, 1<<20); err == nil {
			var inner map[string]any
			if err := json.Unmarshal([]byte(env.Data), &inner); err != nil {
				t.Fatalf("inner data is not JSON: %v", err)
			}
		}
	})
}

// FuzzParsePayload: never panics; an accepted payload has the documented shape, its Raw is
// compact valid JSON no larger than the input and parses again to the same payload, and its
// frame is well formed.
func FuzzParsePayload(f *testing.F) {
	for _, s := range []string{
		`{"etag":"\"abc\"","lastModified":1700000000000,"type":"refetchConfig"}`,
		`{"etag":"e","lastModified":1,"extra":{"a":[1,2]}}`,
		`{"etag":"e","lastModified":1.5}`,
		`{"etag":"e","lastModified":-1}`,
		`{"etag":1,"lastModified":1}`,
		`{"etag":"e","lastModified":99999999999999999999}`,
		`[]`, `null`, `"x"`, ``, `{`, "\xff",
		`{"etag":"e","lastModified":1,"type":5}`,
		`{"etag":"a\nb","lastModified":1,"x":"\u2028"}`,
		` {"etag":"e","lastModified":1} `,
	} {
		f.Add([]byte(s), 0)
	}
	f.Add([]byte(`{"etag":"e","lastModified":1}`), 10)
	f.Fuzz(func(t *testing.T, raw []byte, max int) {
		if max > 1<<20 {
			max = 1 << 20
		}
		p, err := ParsePayload(raw, max)
		if err != nil {
			if p.ETag != "" || p.Raw != nil || p.LastModified != 0 {
				t.Fatalf("error %v with a non-zero payload %+v", err, p)
			}
			return
		}
		limit := max
		if limit <= 0 {
			limit = DefaultMaxPayload
		}
		if len(raw) > limit {
			t.Fatalf("accepted %d bytes over the limit %d", len(raw), limit)
		}
		if p.ETag == "" || p.LastModified < 0 {
			t.Fatalf("accepted payload %+v", p)
		}
		if len(p.Raw) > len(raw) || !json.Valid(p.Raw) || p.Raw[0] != '{' {
			t.Fatalf("Raw %q from %q", p.Raw, raw)
		}
		again, err := ParsePayload(p.Raw, max)
		if err != nil || again.ETag != p.ETag || again.LastModified != p.LastModified || string(again.Raw) != string(p.Raw) {
			t.Fatalf("re-parse of Raw %q: %+v, %v", p.Raw, again, err)
		}
		checkFrameShape(t, Encode("c", p, time.UnixMilli(0)))
		if v, ok := ParseEventID(p.ID()); !ok || v != p.Version() {
			t.Fatalf("id %q does not round-trip", p.ID())
		}
	})
}

// FuzzParseEventID: never panics; an accepted id names a non-negative version whose own id
// parses back to it, and is made only of digits, '-' and lower-case hex.
func FuzzParseEventID(f *testing.F) {
	for _, s := range []string{
		"1700000000000-b6413aeb", "0-00000000", "9223372036854775807-ffffffff",
		"9223372036854775808-ffffffff", "-1-00000000", "1-ABCDEF01", "1-0000000", "",
		"1-00000000\n", "0001-00000000", "abc", strings.Repeat("9", 29),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := ParseEventID(s)
		if !ok {
			if v != (hub.Version{}) {
				t.Fatalf("rejected %q but returned %+v", s, v)
			}
			return
		}
		if v.Time < 0 {
			t.Fatalf("accepted %q as negative time %d", s, v.Time)
		}
		if strings.Trim(s, "0123456789abcdef-") != "" || strings.Count(s, "-") != 1 {
			t.Fatalf("accepted %q with other characters", s)
		}
		id := EventID(v)
		back, ok := ParseEventID(id)
		if !ok || back != v {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, v, id, back, ok)
		}
		// An id without leading zeros (what EventID writes) re-encodes to itself.
		if dash := strings.IndexByte(s, '-'); (s[0] != '0' || dash == 1) && id != s {
			t.Fatalf("id %q re-encodes as %q", s, id)
		}
	})
}

// FuzzScanMembers: whenever the fast path reads an object's members, it reads exactly what
// encoding/json does (the reference).
func FuzzScanMembers(f *testing.F) {
	for _, s := range []string{
		`{"etag":"\"abc\"","lastModified":1700000000000,"type":"refetchConfig"}`,
		`{"etag":"e","lastModified":1,"extra":{"a":[1,2,{"etag":"x"}],"b":"}\"]"}}`,
		`{ "etag" : "e" , "lastModified" : 1 , "etag" : "f" }`,
		`{"etag":"e","lastModified":1.5e3,"type":null,"x":[],"y":{},"z":true}`,
		`{"\u0065tag":"e","lastModified":1}`, `{"Etag":"e","LASTMODIFIED":1}`,
		`{}`, `{"a":"\\"}`, `{"etag":"a\nb\"c\\","lastModified":-0}`,
		`[]`, `null`, ``, `{`, `{"etag":}`, "{\"etag\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		fast, ok := scanMembers(raw)
		if !ok {
			return
		}
		ref, err := mapMembers(raw)
		if err != nil {
			t.Fatalf("scanMembers read %q, which encoding/json refuses: %v", raw, err)
		}
		if fast.hasETag != ref.hasETag || fast.hasLastModified != ref.hasLastModified || fast.hasType != ref.hasType ||
			string(fast.etag) != string(ref.etag) || string(fast.lastModified) != string(ref.lastModified) || string(fast.typ) != string(ref.typ) {
			t.Fatalf("%q: scanMembers %+v, encoding/json %+v", raw, fast, ref)
		}
	})
}

// envelope is the frame's data line as encoding/json sees it, for encodeReference.
type envelope struct {
	ID        string `json:"id"`
	Timestamp int64  `json:"timestamp"`
	Channel   string `json:"channel"`
	Data      string `json:"data"`
	Name      string `json:"name"`
}

// encodeReference is Encode as it was written with encoding/json: the reference the
// hand-written one must match byte for byte.
func encodeReference(channel string, p Payload, received time.Time) []byte {
	id := p.ID()
	env := envelope{ID: id, Timestamp: received.UnixMilli(), Channel: channel, Data: string(p.Raw), Name: "change"}
	var buf bytes.Buffer
	buf.WriteString("id: ")
	buf.WriteString(id)
	buf.WriteString("\nevent: message\ndata: ")
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(env)
	buf.WriteByte('\n')
	return buf.Bytes()
}

// FuzzEncodeMatchesJSON: Encode writes exactly the bytes encoding/json would, for any
// channel, ETag, payload bytes (invalid UTF-8, control characters, U+2028/9, HTML
// characters) and time.
func FuzzEncodeMatchesJSON(f *testing.F) {
	f.Add("dvc_server_abc", `"abc"`, int64(1700000000000), []byte(`{"etag":"\"abc\"","lastModified":1700000000000}`), int64(1700000000123))
	f.Add("a\nb<>&", "e\r\n", int64(0), []byte("{\"x\":\"\n\r\u2028\u2029\b\f\t\x00\x1f\x7f<>&\"}"), int64(0))
	f.Add("\xff\xfe", "\x00", int64(1<<62), []byte("\xc3\x28\xe2\x80\xa8\xed\xa0\x80"), int64(-1))
	f.Add("", "", int64(-5), []byte(``), int64(1))
	f.Fuzz(func(t *testing.T, channel, etag string, lm int64, raw []byte, recvMs int64) {
		p := Payload{ETag: etag, LastModified: lm, Raw: raw}
		got, want := Encode(channel, p, time.UnixMilli(recvMs)), encodeReference(channel, p, time.UnixMilli(recvMs))
		if string(got) != string(want) {
			t.Fatalf("Encode = %q\nencoding/json = %q", got, want)
		}
	})
}
