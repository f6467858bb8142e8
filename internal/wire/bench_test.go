package wire

import (
	"testing"
	"time"
)

var benchPayload = []byte(`{"etag":"\"3d1f2c8e6a9b4f7e8d2c1b0a9f8e7d6c\"","lastModified":1700000000000,"type":"refetchConfig"}`)

func BenchmarkEncode(b *testing.B) {
	p, err := ParsePayload(benchPayload, 0)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	b.SetBytes(int64(len(Encode("dvc_server_bench", p, now))))
	for b.Loop() {
		Encode("dvc_server_bench", p, now)
	}
}

func BenchmarkNewMessage(b *testing.B) {
	p, err := ParsePayload(benchPayload, 0)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		NewMessage("dvc_server_bench", p, now)
	}
}

func BenchmarkParsePayload(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		if _, err := ParsePayload(benchPayload, 0); err != nil {
			b.Fatal(err)
		}
	}
}
