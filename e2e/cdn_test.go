package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// cdn stands in for DevCycle's config CDN (GET /config/v2/server/<sdkKey>.json, used by server
// SDKs, with ETag + Last-Modified and 304 on If-None-Match), its client SDK API (GET
// /v1/sdkConfig?sdkKey=..., used by js-client-sdk) and its events API (POST /v1/events...,
// accepted and ignored). It records every request so tests can assert a refetch, or none.
type cdn struct {
	URL string

	mu     sync.Mutex
	server map[string]cdnDoc // sdkKey -> current server config
	client map[string]cdnDoc // sdkKey -> current client config
	reqs   []cdnRequest
}

// cdnDoc is one version of a config.
type cdnDoc struct {
	body         []byte
	etag         string // sent verbatim in ETag, quotes included
	lastModified time.Time
}

// cdnRequest is one request the stand-in answered.
type cdnRequest struct {
	At          time.Time
	Method      string
	Path        string
	Query       url.Values
	IfNoneMatch string
	// IfModifiedSince is the header as sent (the stand-in answers by ETag only).
	IfModifiedSince string
	Status          int
}

func (r cdnRequest) String() string {
	s := fmt.Sprintf("%s %s", r.Method, r.Path)
	if len(r.Query) > 0 {
		s += "?" + r.Query.Encode()
	}
	if r.IfNoneMatch != "" {
		s += " If-None-Match:" + r.IfNoneMatch
	}
	if r.IfModifiedSince != "" {
		s += " If-Modified-Since:" + r.IfModifiedSince
	}
	return fmt.Sprintf("%s -> %d", s, r.Status)
}

func startCDN(t testing.TB) *cdn {
	t.Helper()
	c := &cdn{server: map[string]cdnDoc{}, client: map[string]cdnDoc{}}
	srv := httptest.NewServer(http.HandlerFunc(c.serveHTTP))
	t.Cleanup(srv.Close)
	c.URL = srv.URL
	return c
}

func (c *cdn) serveHTTP(w http.ResponseWriter, r *http.Request) {
	rec := cdnRequest{At: time.Now(), Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(),
		IfNoneMatch: r.Header.Get("If-None-Match"), IfModifiedSince: r.Header.Get("If-Modified-Since")}
	defer func() {
		c.mu.Lock()
		c.reqs = append(c.reqs, rec)
		c.mu.Unlock()
	}()
	c.mu.Lock()
	server, client := c.server, c.client
	var doc cdnDoc
	var ok bool
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/config/v2/server/") && strings.HasSuffix(r.URL.Path, ".json"):
		key := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/config/v2/server/"), ".json")
		doc, ok = server[key]
	case r.Method == http.MethodGet && r.URL.Path == "/v1/sdkConfig":
		doc, ok = client[r.URL.Query().Get("sdkKey")]
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/events"):
		c.mu.Unlock()
		rec.Status = http.StatusCreated
		w.WriteHeader(rec.Status)
		w.Write([]byte(`{"message":"ok"}`))
		return
	}
	c.mu.Unlock()
	if !ok {
		rec.Status = http.StatusNotFound
		http.Error(w, `{"message":"not found"}`, rec.Status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("ETag", doc.etag)
	h.Set("Last-Modified", doc.lastModified.UTC().Format(http.TimeFormat))
	h.Set("Cache-Control", "max-age=0, must-revalidate")
	if rec.IfNoneMatch != "" && rec.IfNoneMatch == doc.etag {
		rec.Status = http.StatusNotModified
		w.WriteHeader(rec.Status)
		return
	}
	rec.Status = http.StatusOK
	w.Write(doc.body)
}

// requests returns the recorded requests whose path starts with prefix.
func (c *cdn) requests(prefix string) []cdnRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []cdnRequest
	for _, r := range c.reqs {
		if strings.HasPrefix(r.Path, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// count is len(requests(prefix)).
func (c *cdn) count(prefix string) int { return len(c.requests(prefix)) }

// statuses counts the requests under prefix answered 200 (a config downloaded) and 304 (a
// conditional request for the config the client holds).
func (c *cdn) statuses(prefix string) (ok, notModified int) {
	for _, r := range c.requests(prefix) {
		switch r.Status {
		case http.StatusOK:
			ok++
		case http.StatusNotModified:
			notModified++
		}
	}
	return ok, notModified
}

// describe lists the requests under prefix, for failure messages.
func (c *cdn) describe(prefix string) string {
	var b strings.Builder
	for i, r := range c.requests(prefix) {
		fmt.Fprintf(&b, "\n  #%d %s %s", i+1, r.At.Format("15:04:05.000"), r)
	}
	if b.Len() == 0 {
		return " (none)"
	}
	return b.String()
}

// Ids in the configs below: 24 hex digits, like DevCycle's.
const (
	projectID   = "61535533396f00bab586cb17"
	envID       = "6153553b8cf4e45e0464268d"
	featureID   = "614ef6aa473928459060721a"
	targetID    = "61536f3bc838a705c105eb62"
	audienceID  = "614ef6ea475929459060721a"
	variationID = "615357cf7e9ebdca58446ed0"
	variableID  = "614ef6ea475129459160721a"
	featureKey  = "e2e-feature"
)

func project() map[string]any {
	return map[string]any{"_id": projectID, "key": "e2e-project", "a0_organization": "org_e2e",
		"settings": map[string]any{"edgeDB": map[string]any{"enabled": false}, "optIn": map[string]any{"enabled": false}}}
}

// setServerConfig publishes a new server config version at the CDN: one feature that serves
// variable variableKey = value to every user, and the given sse {hostname, path}.
func (c *cdn) setServerConfig(sdkKey, variableKey, value, etag string, lastModified time.Time, sseHostname, ssePath string) {
	body, err := json.Marshal(map[string]any{
		"project":     project(),
		"environment": map[string]any{"_id": envID, "key": "e2e"},
		"features": []any{map[string]any{
			"_id": featureID, "key": featureKey, "type": "release", "settings": map[string]any{},
			"configuration": map[string]any{
				"_id": "614ef6ea475328459060721a",
				"targets": []any{map[string]any{
					"_id": targetID,
					"_audience": map[string]any{"_id": audienceID,
						"filters": map[string]any{"operator": "and", "filters": []any{map[string]any{"type": "all"}}}},
					"distribution": []any{map[string]any{"_variation": variationID, "percentage": 1}},
				}},
			},
			"variations": []any{map[string]any{"_id": variationID, "key": "served", "name": "Served",
				"variables": []any{map[string]any{"_var": variableID, "value": value}}}},
		}},
		"variables":      []any{map[string]any{"_id": variableID, "key": variableKey, "type": "String"}},
		"variableHashes": map[string]any{variableKey: 2547774734},
		"audiences":      map[string]any{},
		"sse":            map[string]any{"hostname": sseHostname, "path": ssePath},
	})
	if err != nil {
		panic(err)
	}
	c.mu.Lock()
	c.server[sdkKey] = cdnDoc{body: body, etag: etag, lastModified: lastModified}
	c.mu.Unlock()
}

// setClientConfig publishes a new client (bucketed user) config at /v1/sdkConfig: variable
// variableKey = value, the config's etag in the body (what js-client-sdk compares with an SSE
// message's etag) and sse.url.
func (c *cdn) setClientConfig(sdkKey, variableKey, value, etag string, lastModified time.Time, sseURL string) {
	body, err := json.Marshal(map[string]any{
		"project":     project(),
		"environment": map[string]any{"_id": envID, "key": "e2e"},
		"features": map[string]any{featureKey: map[string]any{"_id": featureID, "key": featureKey, "type": "release",
			"_variation": variationID, "variationKey": "served", "variationName": "Served"}},
		"featureVariationMap":  map[string]any{featureID: variationID},
		"variableVariationMap": map[string]any{},
		"variables": map[string]any{variableKey: map[string]any{"_id": variableID, "key": variableKey,
			"type": "String", "value": value}},
		"knownVariableKeys": []any{},
		"etag":              etag,
		"sse":               map[string]any{"url": sseURL, "inactivityDelay": 120000},
	})
	if err != nil {
		panic(err)
	}
	c.mu.Lock()
	c.client[sdkKey] = cdnDoc{body: body, etag: etag, lastModified: lastModified}
	c.mu.Unlock()
}
