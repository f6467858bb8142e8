package sseparse

import (
	"encoding/json"
	"strings"
	"testing"
)

func envelopeFor(t *testing.T, channel, etag string, lm, sent int64) (id string, data []byte) {
	t.Helper()
	inner := `{"etag":` + jsonString(t, etag) + `,"lastModified":` + itoa(lm) + `,"sentAtNs":` + itoa(sent) + `}`
	id = EventID(lm, etag)
	b, err := json.Marshal(Envelope{ID: id, Timestamp: 1700000000001, Channel: channel, Data: inner, Name: "change"})
	if err != nil {
		t.Fatal(err)
	}
	return id, b
}

func jsonString(t *testing.T, s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func itoa(v int64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestQuick(t *testing.T) {
	_, env := envelopeFor(t, "lt-x_0", `"lt-42"`, 1700000000000, 1700000000123456789)
	tests := []struct {
		name string
		in   string
		want Marker
		ok   bool
	}{
		{"envelope", string(env), Marker{Seq: 42, SentAtNs: 1700000000123456789}, true},
		{"inner", `{"etag":"\"lt-7\"","lastModified":1,"sentAtNs":99}`, Marker{Seq: 7, SentAtNs: 99}, true},
		{"spaces", `{"etag": "\"lt-7\"", "sentAtNs" : 99}`, Marker{Seq: 7, SentAtNs: 99}, true},
		{"no sentAt", `{"etag":"\"lt-7\""}`, Marker{}, false},
		{"no etag", `{"sentAtNs":5}`, Marker{}, false},
		{"foreign etag", `{"etag":"\"abc\"","sentAtNs":5}`, Marker{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Quick([]byte(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("Quick(%s) = %+v, %v; want %+v ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestQuickAllocs(t *testing.T) {
	_, env := envelopeFor(t, "c", `"lt-1"`, 1, 2)
	if n := testing.AllocsPerRun(100, func() { _, _ = Quick(env) }); n != 0 {
		t.Fatalf("Quick allocates %v times", n)
	}
}

func TestEventID(t *testing.T) {
	// fnv32a("") is the offset basis 811c9dc5.
	if got := EventID(5, ""); got != "5-811c9dc5" {
		t.Fatalf("EventID = %s", got)
	}
	if got := EventID(1700000000000, `"abc"`); !strings.HasPrefix(got, "1700000000000-") || len(got) != len("1700000000000-")+8 {
		t.Fatalf("EventID = %s", got)
	}
}

func TestStrict(t *testing.T) {
	id, env := envelopeFor(t, "lt_0", `"lt-3"`, 1700000000000, 77)
	good := Event{ID: []byte(id), Type: []byte("message"), Data: env}
	m, err := Strict(&good, "lt_0")
	if err != nil || m.Seq != 3 || m.SentAtNs != 77 {
		t.Fatalf("Strict(good) = %+v, %v", m, err)
	}

	bad := []struct {
		name    string
		ev      Event
		channel string
		errHas  string
	}{
		{"wrong type", Event{ID: []byte(id), Type: []byte("ping"), Data: env}, "lt_0", "event type"},
		{"wrong channel", good, "lt_1", "channel"},
		{"sse id differs", Event{ID: []byte("1-00000000"), Type: []byte("message"), Data: env}, "lt_0", "differs"},
		{"not json", Event{ID: []byte(id), Type: []byte("message"), Data: []byte("{")}, "lt_0", "decode envelope"},
		{"inner not a string", Event{ID: []byte(id), Type: []byte("message"),
			Data: []byte(`{"id":"` + id + `","timestamp":1,"channel":"lt_0","data":{"etag":"x"},"name":"change"}`)}, "lt_0", "decode envelope"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Strict(&tt.ev, tt.channel)
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err = %v, want containing %q", err, tt.errHas)
			}
		})
	}

	// An id computed from another etag is caught.
	_, env2 := envelopeFor(t, "lt_0", `"lt-4"`, 1700000000000, 77)
	ev := Event{ID: []byte(id), Type: []byte("message"), Data: []byte(strings.Replace(string(env2), EventID(1700000000000, `"lt-4"`), id, 1))}
	if _, err := Strict(&ev, "lt_0"); err == nil || !strings.Contains(err.Error(), "want") {
		t.Fatalf("mismatched id accepted: %v", err)
	}
}
