package sseparse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
)

// The load generator publishes inner payloads of the form
//
//	{"etag":"\"lt-<seq>\"","lastModified":<ms>,"sentAtNs":<unix ns>}
//
// and the gateway wraps them in the contract's envelope, where the inner JSON
// is a string: {"id":..,"timestamp":..,"channel":..,"data":"{\"etag\":...}","name":"change"}.

// ErrNoMarker is returned by Quick when the data carries no sentAtNs or etag sequence.
var ErrNoMarker = errors.New("no sentAtNs/etag marker in event data")

// Marker is what the load generator needs from one delivered event.
type Marker struct {
	Seq      int64 // the <seq> of the "lt-<seq>" etag
	SentAtNs int64 // publisher's clock when it published
}

var (
	keySentAt = []byte("sentAtNs")
	keyEtag   = []byte("etag")
	etagSeq   = []byte("lt-")
)

// Quick extracts the marker from an event's data without decoding JSON. It
// accepts the envelope (inner JSON escaped in a string) and the bare inner
// JSON alike. It is the hot path of the generator: no allocation.
func Quick(data []byte) (Marker, error) {
	var m Marker
	sent, ok := numberAfterKey(data, keySentAt)
	if !ok {
		return m, ErrNoMarker
	}
	i := bytes.Index(data, keyEtag)
	if i < 0 {
		return m, ErrNoMarker
	}
	j := bytes.Index(data[i:], etagSeq)
	if j < 0 {
		return m, ErrNoMarker
	}
	seq, n := parseUint(data[i+j+len(etagSeq):])
	if n == 0 {
		return m, ErrNoMarker
	}
	m.Seq, m.SentAtNs = seq, sent
	return m, nil
}

// numberAfterKey finds key, then skips the closing quote (escaped or not), the
// colon and spaces, and parses the unsigned integer that follows.
func numberAfterKey(data, key []byte) (int64, bool) {
	i := bytes.Index(data, key)
	if i < 0 {
		return 0, false
	}
	rest := data[i+len(key):]
	for len(rest) > 0 && (rest[0] == '\\' || rest[0] == '"' || rest[0] == ' ' || rest[0] == ':') {
		rest = rest[1:]
	}
	v, n := parseUint(rest)
	return v, n > 0
}

func parseUint(b []byte) (int64, int) {
	var v int64
	n := 0
	for n < len(b) && n < 19 && b[n] >= '0' && b[n] <= '9' {
		v = v*10 + int64(b[n]-'0')
		n++
	}
	return v, n
}

// Envelope is the outer data JSON of one event (contract "Wire format").
type Envelope struct {
	ID        string `json:"id"`
	Timestamp int64  `json:"timestamp"`
	Channel   string `json:"channel"`
	Data      string `json:"data"`
	Name      string `json:"name"`
}

// Inner is the published payload the generator sends.
type Inner struct {
	Etag         string `json:"etag"`
	LastModified int64  `json:"lastModified"`
	SentAtNs     int64  `json:"sentAtNs"`
}

// EventID returns the contract's event id: <lastModified>-<8 hex fnv32a(etag)>.
func EventID(lastModified int64, etag string) string {
	h := fnv.New32a()
	h.Write([]byte(etag))
	return fmt.Sprintf("%d-%08x", lastModified, h.Sum32())
}

// Strict decodes and checks one event against the contract's wire format:
// event type "message", envelope name "change", envelope id equal to the SSE
// id and to EventID of the inner payload, the expected channel, and an inner
// payload carrying the generator's marker. It allocates; use it to validate,
// not on the hot path of a benchmark.
func Strict(ev *Event, channel string) (Marker, error) {
	var m Marker
	if string(ev.Type) != "message" {
		return m, fmt.Errorf("event type %q, want message", ev.Type)
	}
	var env Envelope
	if err := json.Unmarshal(ev.Data, &env); err != nil {
		return m, fmt.Errorf("decode envelope: %w", err)
	}
	if env.Name != "change" {
		return m, fmt.Errorf("envelope name %q, want change", env.Name)
	}
	if env.Channel != channel {
		return m, fmt.Errorf("envelope channel %q, want %q", env.Channel, channel)
	}
	if env.ID != string(ev.ID) {
		return m, fmt.Errorf("envelope id %q differs from SSE id %q", env.ID, ev.ID)
	}
	if env.Timestamp <= 0 {
		return m, fmt.Errorf("envelope timestamp %d", env.Timestamp)
	}
	var in Inner
	if err := json.Unmarshal([]byte(env.Data), &in); err != nil {
		return m, fmt.Errorf("decode inner data string: %w", err)
	}
	if want := EventID(in.LastModified, in.Etag); env.ID != want {
		return m, fmt.Errorf("event id %q, want %q", env.ID, want)
	}
	q, err := Quick([]byte(env.Data))
	if err != nil {
		return m, err
	}
	if q.SentAtNs != in.SentAtNs {
		return m, fmt.Errorf("sentAtNs mismatch %d vs %d", q.SentAtNs, in.SentAtNs)
	}
	return q, nil
}
