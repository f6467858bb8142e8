package stream

import (
	"bytes"
	"strings"
)

// This file is the strict request parser of the plain accept path (accept.go). It reads only
// the simplest form of a stream request: a plain HTTP/1.1 GET of the stream path, whole, with
// CRLF line endings and nothing after it. Whatever it does not accept goes to net/http
// unchanged, so it need not know HTTP's corners: it must only never accept a request that
// net/http would read differently, which FuzzPlainGetAgreesWithNetHTTP checks against
// net/http's own parser.

// maxPlainRequest is the most of a request the plain path reads: an SDK's stream request is
// a few hundred bytes; a larger one (a browser's cookies) goes to net/http.
const maxPlainRequest = 4 << 10

// plainGet is what a stream request says, as the plain accept path read it. Its strings are
// substrings of one copy of the request, kept no longer than the stream's opening.
type plainGet struct {
	query        string   // the raw query, after "?"
	origin       string   // the first Origin header's value
	lastEventID  []string // every Last-Event-ID header's value, in order
	forwardedFor []string // every X-Forwarded-For header's value, in order
}

// parsePlainGet reads req as a plain GET of path. It reports false for anything else: another
// method, path or protocol version, a request not yet whole, bytes after it, a body, an
// upgrade, a header line net/http might read differently (obsolete folding, bare LF, a
// character outside printable ASCII), no Host or more than one.
func parsePlainGet(req []byte, path string) (plainGet, bool) {
	var g plainGet
	end := bytes.Index(req, []byte("\r\n\r\n"))
	if end < 0 || end+4 != len(req) {
		return g, false
	}
	text := string(req[:end+2]) // one copy: every string in g is a substring of it
	// Lines end in CRLF (text ends in one); a bare CR or LF stays inside its line, for
	// headerField and queryChars to refuse.
	line, rest, _ := strings.Cut(text, "\r\n")
	const method, proto = "GET ", " HTTP/1.1"
	if len(line) < len(method)+len(path)+len(proto) || line[:len(method)] != method ||
		line[len(line)-len(proto):] != proto {
		return g, false
	}
	target := line[len(method) : len(line)-len(proto)]
	if len(target) < len(path) || target[:len(path)] != path {
		return g, false
	}
	if q := target[len(path):]; q != "" {
		if q[0] != '?' || !queryChars(q[1:]) {
			return g, false
		}
		g.query = q[1:]
	}
	hosts, origin := 0, false
	for rest != "" {
		line, rest, _ = strings.Cut(rest, "\r\n")
		name, value, ok := headerField(line)
		if !ok {
			return g, false
		}
		switch {
		case strings.EqualFold(name, "Host"):
			hosts++
			if !hostChars(value) {
				return g, false
			}
		case strings.EqualFold(name, "Origin"):
			if !origin { // the first counts, as http.Header.Get has it
				g.origin, origin = value, true
			}
		case strings.EqualFold(name, "Last-Event-ID"):
			g.lastEventID = append(g.lastEventID, value)
		case strings.EqualFold(name, "X-Forwarded-For"):
			g.forwardedFor = append(g.forwardedFor, value)
		case strings.EqualFold(name, "Connection"):
			// net/http closes after a response to "close"; a stream never ends, so only
			// keep-alive (what clients send) is read here.
			if !strings.EqualFold(value, "keep-alive") {
				return g, false
			}
		case strings.EqualFold(name, "Content-Length"), strings.EqualFold(name, "Transfer-Encoding"),
			strings.EqualFold(name, "Expect"), strings.EqualFold(name, "Upgrade"), strings.EqualFold(name, "Http2-Settings"):
			return g, false
		}
	}
	return g, hosts == 1
}

// headerField splits "Name: value": the name a token right before the colon, the value
// printable ASCII or tabs, with the spaces and tabs around it trimmed, as net/http trims them.
func headerField(line string) (name, value string, ok bool) {
	colon := -1
	for i := 0; i < len(line); i++ {
		if line[i] == ':' {
			colon = i
			break
		}
		if !tokenChar(line[i]) {
			return "", "", false
		}
	}
	if colon <= 0 {
		return "", "", false
	}
	value = line[colon+1:]
	for i := 0; i < len(value); i++ {
		if c := value[i]; (c < ' ' && c != '\t') || c >= 0x7f {
			return "", "", false
		}
	}
	for value != "" && (value[0] == ' ' || value[0] == '\t') {
		value = value[1:]
	}
	for value != "" && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
		value = value[:len(value)-1]
	}
	return line[:colon], value, true
}

// tokenChar reports whether c may be in a header name (RFC 9110 tchar).
func tokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// queryChars reports whether q is printable ASCII without a space or '#', which net/http
// keeps in the raw query as it is.
func queryChars(q string) bool {
	for i := 0; i < len(q); i++ {
		if c := q[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// hostChars reports whether h is a plain host[:port]: letters, digits, '.', '-', ':', '[',
// ']', which net/http accepts as a Host header as it is. An empty Host is accepted by net/http
// too, and by this.
func hostChars(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}
