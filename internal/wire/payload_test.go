package wire

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParsePayload(t *testing.T) {
	type want struct {
		err  error
		etag string
		lm   int64
		raw  string
	}
	cases := []struct {
		name string
		in   string
		max  int
		want want
	}{
		{"minimal", `{"etag":"\"abc\"","lastModified":1700000000000}`, 0,
			want{etag: `"abc"`, lm: 1700000000000, raw: `{"etag":"\"abc\"","lastModified":1700000000000}`}},
		{"with type", `{"etag":"e","lastModified":1,"type":"refetchConfig"}`, 0,
			want{etag: "e", lm: 1, raw: `{"etag":"e","lastModified":1,"type":"refetchConfig"}`}},
		{"type null", `{"etag":"e","lastModified":1,"type":null}`, 0,
			want{etag: "e", lm: 1, raw: `{"etag":"e","lastModified":1,"type":null}`}},
		{"zero lastModified", `{"etag":"e","lastModified":0}`, 0, want{etag: "e", lm: 0, raw: `{"etag":"e","lastModified":0}`}},
		{"max int64", `{"etag":"e","lastModified":9223372036854775807}`, 0,
			want{etag: "e", lm: 9223372036854775807, raw: `{"etag":"e","lastModified":9223372036854775807}`}},
		{"whitespace compacted", " \n{ \"etag\" : \"e\" ,\n\t\"lastModified\" : 5 } \r\n", 0,
			want{etag: "e", lm: 5, raw: `{"etag":"e","lastModified":5}`}},
		{"extra fields kept verbatim", `{"etag":"e","lastModified":2,"sentAtNs":1700000000000123456,"nested":{"a":[1,2.5,"x"]},"u":"é\u2028"}`, 0,
			want{etag: "e", lm: 2, raw: `{"etag":"e","lastModified":2,"sentAtNs":1700000000000123456,"nested":{"a":[1,2.5,"x"]},"u":"é\u2028"}`}},
		{"exactly max", `{"etag":"e","lastModified":1}`, len(`{"etag":"e","lastModified":1}`),
			want{etag: "e", lm: 1, raw: `{"etag":"e","lastModified":1}`}},

		{"empty", ``, 0, want{err: ErrNotObject}},
		{"blank", "  \n ", 0, want{err: ErrNotObject}},
		{"array", `[{"etag":"e","lastModified":1}]`, 0, want{err: ErrNotObject}},
		{"string", `"{\"etag\":\"e\"}"`, 0, want{err: ErrNotObject}},
		{"number", `1700000000000`, 0, want{err: ErrNotObject}},
		{"null", `null`, 0, want{err: ErrNotObject}},
		{"truncated", `{"etag":"e","lastModified":1`, 0, want{err: ErrNotObject}},
		{"trailing garbage", `{"etag":"e","lastModified":1} x`, 0, want{err: ErrNotObject}},
		{"two objects", `{"etag":"e","lastModified":1}{"etag":"e","lastModified":2}`, 0, want{err: ErrNotObject}},
		{"not json", `etag=e&lastModified=1`, 0, want{err: ErrNotObject}},
		{"invalid utf-8", "{\"etag\":\"\xff\xfe\",\"lastModified\":1}", 0, want{err: ErrNotObject}},
		{"invalid utf-8 in extra", "{\"etag\":\"e\",\"lastModified\":1,\"x\":\"\xc3\x28\"}", 0, want{err: ErrNotObject}},

		{"missing etag", `{"lastModified":1}`, 0, want{err: ErrETag}},
		{"empty etag", `{"etag":"","lastModified":1}`, 0, want{err: ErrETag}},
		{"null etag", `{"etag":null,"lastModified":1}`, 0, want{err: ErrETag}},
		{"number etag", `{"etag":123,"lastModified":1}`, 0, want{err: ErrETag}},
		{"object etag", `{"etag":{"v":"x"},"lastModified":1}`, 0, want{err: ErrETag}},
		{"bool etag", `{"etag":true,"lastModified":1}`, 0, want{err: ErrETag}},

		{"missing lastModified", `{"etag":"e"}`, 0, want{err: ErrLastModified}},
		{"null lastModified", `{"etag":"e","lastModified":null}`, 0, want{err: ErrLastModified}},
		{"string lastModified", `{"etag":"e","lastModified":"1700000000000"}`, 0, want{err: ErrLastModified}},
		{"float lastModified", `{"etag":"e","lastModified":1700000000000.5}`, 0, want{err: ErrLastModified}},
		{"float .0 lastModified", `{"etag":"e","lastModified":1700000000000.0}`, 0, want{err: ErrLastModified}},
		{"exponent lastModified", `{"etag":"e","lastModified":1.7e12}`, 0, want{err: ErrLastModified}},
		{"negative lastModified", `{"etag":"e","lastModified":-1}`, 0, want{err: ErrLastModified}},
		{"overflow lastModified", `{"etag":"e","lastModified":9223372036854775808}`, 0, want{err: ErrLastModified}},
		{"bool lastModified", `{"etag":"e","lastModified":true}`, 0, want{err: ErrLastModified}},
		{"array lastModified", `{"etag":"e","lastModified":[1]}`, 0, want{err: ErrLastModified}},

		{"number type", `{"etag":"e","lastModified":1,"type":1}`, 0, want{err: ErrType}},
		{"object type", `{"etag":"e","lastModified":1,"type":{}}`, 0, want{err: ErrType}},

		{"one over max", `{"etag":"e","lastModified":1}`, len(`{"etag":"e","lastModified":1}`) - 1, want{err: ErrTooLarge}},
		{"over default max", `{"etag":"e","lastModified":1,"pad":"` + strings.Repeat("p", DefaultMaxPayload) + `"}`, 0, want{err: ErrTooLarge}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := ParsePayload([]byte(c.in), c.max)
			if c.want.err != nil {
				if !errors.Is(err, c.want.err) {
					t.Fatalf("err = %v, want %v", err, c.want.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if p.ETag != c.want.etag || p.LastModified != c.want.lm || string(p.Raw) != c.want.raw {
				t.Fatalf("got etag %q lm %d raw %s", p.ETag, p.LastModified, p.Raw)
			}
		})
	}
}

func TestParsePayloadDoesNotAliasInput(t *testing.T) {
	in := []byte(`{"etag":"e","lastModified":1}`)
	p, err := ParsePayload(in, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 'X'
	}
	if string(p.Raw) != `{"etag":"e","lastModified":1}` {
		t.Fatalf("Raw changed with the caller's buffer: %q", p.Raw)
	}
}

func TestParsePayloadErrorsAreDistinct(t *testing.T) {
	errs := []error{ErrTooLarge, ErrNotObject, ErrETag, ErrLastModified, ErrType}
	for i, a := range errs {
		for j, b := range errs {
			if i != j && errors.Is(a, b) {
				t.Fatalf("%v is %v", a, b)
			}
		}
	}
}

// TestParsePayloadFieldNamesAreCaseSensitive: SDKs read the payload with JSON.parse, whose
// keys are case-sensitive, so "ETag"/"LastModified" are not the fields SDKs look for, and a
// payload's version must come from the exact "etag" and "lastModified" members SDKs see.
func TestParsePayloadFieldNamesAreCaseSensitive(t *testing.T) {
	// No "etag"/"lastModified" member at all as far as an SDK can tell: must be refused.
	if p, err := ParsePayload([]byte(`{"ETag":"x","LastModified":1}`), 0); err == nil {
		t.Errorf(`{"ETag":"x","LastModified":1} accepted as %+v; SDKs see no "etag" in it`, p)
	}
	// An extra member that differs only in case must not replace the real one: SDKs see
	// etag "a", so the version (and id) must be derived from "a".
	p, err := ParsePayload([]byte(`{"etag":"a","ETAG":"b","lastModified":1}`), 0)
	if err != nil {
		t.Fatalf("valid payload with an extra member refused: %v", err)
	}
	if p.ETag != "a" {
		t.Errorf(`ETag = %q, want "a" (the "etag" member SDKs read)`, p.ETag)
	}
	// Extra fields are kept verbatim, whatever their case, and never validated.
	if _, err := ParsePayload([]byte(`{"etag":"a","lastModified":1,"LASTMODIFIED":"x"}`), 0); err != nil {
		t.Errorf("extra member LASTMODIFIED made a valid payload invalid: %v", err)
	}
}

// TestParseReceivedStoredMarker: a payload the store marked as stored parses to the same
// Payload (the same bytes for SDKs) as the unmarked one, and says it is stored; the marker
// counts only as the exact first member.
func TestParseReceivedStoredMarker(t *testing.T) {
	const in = `{"etag":"\"abc\"","lastModified":1700000000000,"type":"refetchConfig"}`
	plain, err := ParsePayload([]byte(in), 0)
	if err != nil {
		t.Fatal(err)
	}
	marked := MarkStored(plain.Raw)
	if !strings.HasPrefix(string(marked), `{"_sseGatewayStored":1,"etag"`) {
		t.Fatalf("MarkStored = %s", marked)
	}
	cases := []struct {
		name   string
		in     string
		max    int
		stored bool
		err    error
	}{
		{"marked", string(marked), 0, true, nil},
		{"marked, max applies to the unmarked payload", string(marked), len(plain.Raw), true, nil},
		{"marked, one byte over max", string(marked), len(plain.Raw) - 1, false, ErrTooLarge},
		{"plain", in, 0, false, nil},
		{"marker not first", `{"etag":"\"abc\"","_sseGatewayStored":1,"lastModified":1700000000000,"type":"refetchConfig"}`, 0, false, nil},
		{"marker alone", `{"_sseGatewayStored":1}`, 0, false, ErrETag},
		{"marked, broken rest", `{"_sseGatewayStored":1,"etag":`, 0, false, ErrNotObject},
	}
	for _, c := range cases {
		p, stored, err := ParseReceived([]byte(c.in), c.max)
		if !errors.Is(err, c.err) || stored != c.stored {
			t.Fatalf("%s: ParseReceived = stored %v, err %v; want %v, %v", c.name, stored, err, c.stored, c.err)
		}
		if err != nil || c.name == "marker not first" {
			continue
		}
		if string(p.Raw) != string(plain.Raw) || p.ETag != plain.ETag || p.LastModified != plain.LastModified {
			t.Fatalf("%s: Raw %s, want the unmarked %s", c.name, p.Raw, plain.Raw)
		}
		if string(NewMessage("ch", p, time.Time{}).Frame) != string(NewMessage("ch", plain, time.Time{}).Frame) {
			t.Fatalf("%s: the SDK-facing frame differs from the unmarked payload's", c.name)
		}
	}
}
