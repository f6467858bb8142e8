// Package sseparse is a push-style parser for Server-Sent Events streams
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
// and the helpers the load generator uses to read the gateway's wire format.
//
// It holds no reader of its own: the caller feeds it whatever bytes a Read
// returned, split anywhere, so one small buffer per connection is enough.
package sseparse

import (
	"bytes"
	"errors"
)

// ErrLineTooLong is returned by Feed when a line exceeds Parser.MaxLine.
var ErrLineTooLong = errors.New("sse line too long")

// DefaultMaxLine bounds one line (and one event's data) when Parser.MaxLine is zero.
const DefaultMaxLine = 1 << 20

// Event is one dispatched event. Its slices alias the parser's buffers and are
// valid only during the OnEvent call.
type Event struct {
	ID   []byte // last event ID buffer (persists across events, as in the spec)
	Type []byte // "message" when the stream sent no event: field
	Data []byte // data lines joined with '\n', without the trailing '\n'
}

// IsMessage reports whether ev has the default type, message: what a gateway's publishes
// are sent as.
func (ev *Event) IsMessage() bool { return bytes.Equal(ev.Type, messageType) }

// Parser turns a byte stream into events and comments. The zero value is ready
// to use once OnEvent is set. A Parser is not safe for concurrent use.
type Parser struct {
	// OnEvent is called for each dispatched event (a blank line after at least one data: line).
	OnEvent func(ev *Event)
	// OnComment, if set, is called for each line starting with ':' (without the colon).
	OnComment func(text []byte)
	// MaxLine bounds a line and an event's accumulated data; 0 means DefaultMaxLine.
	MaxLine int
	// OnRetry, if set, is called with the value of each valid retry: field (milliseconds),
	// the reconnection delay the server asks for.
	OnRetry func(ms int64)

	line    []byte // partial line carried over between Feed calls
	data    []byte
	typ     []byte
	id      []byte
	hasData bool
	skipLF  bool // the previous byte was '\r': a following '\n' belongs to the same terminator
	ev      Event
}

var messageType = []byte("message")

// Feed consumes p. It returns ErrLineTooLong when a line or an event outgrows MaxLine.
func (p *Parser) Feed(b []byte) error {
	max := p.MaxLine
	if max <= 0 {
		max = DefaultMaxLine
	}
	for len(b) > 0 {
		if p.skipLF {
			p.skipLF = false
			if b[0] == '\n' {
				b = b[1:]
				continue
			}
		}
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			if len(p.line)+len(b) > max {
				return ErrLineTooLong
			}
			p.line = append(p.line, b...)
			return nil
		}
		var line []byte
		if len(p.line) == 0 {
			line = b[:i] // whole line inside b: no copy
		} else {
			if len(p.line)+i > max {
				return ErrLineTooLong
			}
			p.line = append(p.line, b[:i]...)
			line = p.line
		}
		if b[i] == '\r' {
			p.skipLF = true
		}
		b = b[i+1:]
		if err := p.processLine(line, max); err != nil {
			return err
		}
		p.line = p.line[:0]
	}
	return nil
}

func (p *Parser) processLine(line []byte, max int) error {
	if len(line) == 0 {
		p.dispatch()
		return nil
	}
	if line[0] == ':' {
		if p.OnComment != nil {
			p.OnComment(line[1:])
		}
		return nil
	}
	field, value := line, []byte(nil)
	if c := bytes.IndexByte(line, ':'); c >= 0 {
		field, value = line[:c], line[c+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		if len(p.data)+len(value)+1 > max {
			return ErrLineTooLong
		}
		p.data = append(p.data, value...)
		p.data = append(p.data, '\n')
		p.hasData = true
	case "event":
		p.typ = append(p.typ[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.id = append(p.id[:0], value...)
		}
	case "retry":
		// The spec: a value of ASCII digits only sets the reconnection time; others are ignored.
		if ms, n := parseUint(value); p.OnRetry != nil && n > 0 && n == len(value) {
			p.OnRetry(ms)
		}
	default:
		// Unknown fields are ignored, as the spec says.
	}
	return nil
}

func (p *Parser) dispatch() {
	if !p.hasData {
		p.typ = p.typ[:0]
		return
	}
	p.ev.ID = p.id
	p.ev.Type = p.typ
	if len(p.ev.Type) == 0 {
		p.ev.Type = messageType
	}
	p.ev.Data = p.data[:len(p.data)-1]
	if p.OnEvent != nil {
		p.OnEvent(&p.ev)
	}
	p.data = p.data[:0]
	p.typ = p.typ[:0]
	p.hasData = false
}
