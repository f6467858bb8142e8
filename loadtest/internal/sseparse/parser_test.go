package sseparse

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

type rec struct {
	events   []string // "id|type|data"
	comments []string
}

func (r *rec) parser() *Parser {
	return &Parser{
		OnEvent:   func(ev *Event) { r.events = append(r.events, fmt.Sprintf("%s|%s|%s", ev.ID, ev.Type, ev.Data)) },
		OnComment: func(t []byte) { r.comments = append(r.comments, string(t)) },
	}
}

func TestParser(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		events   []string
		comments []string
	}{
		{"contract frame", "id: 1-abc\nevent: message\ndata: {\"a\":1}\n\n", []string{`1-abc|message|{"a":1}`}, nil},
		{"default type", "data: x\n\n", []string{"|message|x"}, nil},
		{"crlf", "id: 7\r\nevent: e\r\ndata: x\r\n\r\n", []string{"7|e|x"}, nil},
		{"cr only", "data: x\r\rdata: y\r\r", []string{"|message|x", "|message|y"}, nil},
		{"multi data lines", "data: a\ndata:b\ndata\n\n", []string{"|message|a\nb\n"}, nil},
		{"comment and heartbeat", ":\n\n: hi\n\ndata: x\n\n", []string{"|message|x"}, []string{"", " hi"}},
		{"no data no dispatch, type reset", "event: foo\n\ndata: x\n\n", []string{"|message|x"}, nil},
		{"id persists", "id: 5\ndata: a\n\ndata: b\n\n", []string{"5|message|a", "5|message|b"}, nil},
		{"id with NUL ignored", "id: 5\ndata: a\n\nid: x\x00y\ndata: b\n\n", []string{"5|message|a", "5|message|b"}, nil},
		{"unknown field and retry ignored", "retry: 100\nfoo: bar\ndata: a\n\n", []string{"|message|a"}, nil},
		{"only one leading space stripped", "data:  two\n\n", []string{"|message| two"}, nil},
		{"incomplete event not dispatched", "data: a\n", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every split point must give the same result: the network splits anywhere.
			for cut := 0; cut <= len(tt.in); cut++ {
				var r rec
				p := r.parser()
				if err := p.Feed([]byte(tt.in[:cut])); err != nil {
					t.Fatal(err)
				}
				if err := p.Feed([]byte(tt.in[cut:])); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(r.events, tt.events) || !reflect.DeepEqual(r.comments, tt.comments) {
					t.Fatalf("cut %d: events %q comments %q, want %q %q", cut, r.events, r.comments, tt.events, tt.comments)
				}
			}
			// Byte by byte.
			var r rec
			p := r.parser()
			for i := 0; i < len(tt.in); i++ {
				if err := p.Feed([]byte{tt.in[i]}); err != nil {
					t.Fatal(err)
				}
			}
			if !reflect.DeepEqual(r.events, tt.events) {
				t.Fatalf("byte by byte: %q, want %q", r.events, tt.events)
			}
		})
	}
}

func TestParserLineTooLong(t *testing.T) {
	var r rec
	p := r.parser()
	p.MaxLine = 16
	if err := p.Feed([]byte("data: " + strings.Repeat("x", 8))); err != nil {
		t.Fatal(err)
	}
	if err := p.Feed([]byte(strings.Repeat("x", 8))); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("err = %v, want ErrLineTooLong", err)
	}
	p2 := r.parser()
	p2.MaxLine = 16
	if err := p2.Feed([]byte("data: 0123456789\ndata: 0123456789\n")); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("data accumulation: err = %v, want ErrLineTooLong", err)
	}
}

func TestParserRetry(t *testing.T) {
	var got []int64
	p := Parser{OnEvent: func(*Event) {}, OnRetry: func(ms int64) { got = append(got, ms) }}
	// Only ASCII digits set the reconnection time; "1.5" and "" are ignored (the spec).
	for _, chunk := range []string{"retry: 25", "00\n\nretry: 1.5\nretry:\ndata: x\nretry:7\n\n"} {
		if err := p.Feed([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2 || got[0] != 2500 || got[1] != 7 {
		t.Fatalf("retry values = %v, want [2500 7]", got)
	}
}

func TestIsMessage(t *testing.T) {
	var got []bool
	p := Parser{OnEvent: func(ev *Event) { got = append(got, ev.IsMessage()) }}
	if err := p.Feed([]byte("data: a\n\nevent: message\ndata: b\n\nevent: other\ndata: c\n\n")); err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, true, false}; !reflect.DeepEqual(got, want) {
		t.Fatalf("IsMessage %v, want %v", got, want)
	}
}
