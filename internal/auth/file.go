package auth

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// maxKeysFile bounds how much of a keys file is read: a misconfigured path (a log file, a
// device) must fail fast rather than fill memory.
const maxKeysFile = 16 << 20

// fileFormat is the keys file:
//
//	{"keys":[{"name":"prod","key":"<secret>","channels":["dvc_server_*","dvc_client_*"]}]}
type fileFormat struct {
	Keys []struct {
		Name     string   `json:"name"`
		Key      string   `json:"key"`
		Channels []string `json:"channels"`
	} `json:"keys"`
}

// LoadFile reads and validates a keys file. Every entry needs a name, a key and at least one
// channel pattern; names must be unique. Errors name the entry but never show a secret.
func LoadFile(path string) ([]Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxKeysFile {
		return nil, fmt.Errorf("keys file %s: larger than %d bytes", path, maxKeysFile)
	}
	var ff fileFormat
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ff); err != nil {
		return nil, fmt.Errorf("keys file %s: %w", path, err)
	}
	seen := make(map[string]bool)
	keys := make([]Key, 0, len(ff.Keys))
	for i, e := range ff.Keys {
		switch {
		case strings.TrimSpace(e.Name) == "":
			return nil, fmt.Errorf("keys file %s: entry %d has no name", path, i)
		case seen[e.Name]:
			return nil, fmt.Errorf("keys file %s: name %q used twice", path, e.Name)
		case e.Key == "":
			return nil, fmt.Errorf("keys file %s: key %q has an empty secret", path, e.Name)
		case len(e.Channels) == 0:
			return nil, fmt.Errorf("keys file %s: key %q has no channel patterns", path, e.Name)
		}
		seen[e.Name] = true
		keys = append(keys, Key{Name: e.Name, Hash: HashKey(e.Key), Channels: e.Channels})
	}
	return keys, nil
}

// FileSource keeps a Store's "file" source equal to a keys file: Load reads it at start, and
// Reload (on SIGHUP) reads it again. Its methods must not be called concurrently.
type FileSource struct {
	path      string
	store     *Store
	onRevoked func(ids []string) (closed int)
	log       *slog.Logger
}

// NewFileSource returns a source feeding store from the keys file at path. onRevoked, if not
// nil, is called with the IDs of keys a reload removed, rotated or narrowed, and returns how
// many streams it closed (stream.Server.CloseKeys). log may be nil.
func NewFileSource(path string, store *Store, onRevoked func(ids []string) (closed int), log *slog.Logger) *FileSource {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FileSource{path: path, store: store, onRevoked: onRevoked, log: log}
}

// Load reads the file and sets the store's "file" source; an error leaves the store as it was.
func (f *FileSource) Load() error {
	ks, err := LoadFile(f.path)
	if err != nil {
		return err
	}
	f.store.SetSource("file", ks)
	f.log.Info("keys loaded", "file", f.path, "keys", len(ks))
	return nil
}

// Reload reads the file again and closes the streams of keys it no longer permits. A file
// that is rejected keeps the current keys: a typo must not lock every SDK out.
func (f *FileSource) Reload() {
	ks, err := LoadFile(f.path)
	if err != nil {
		f.log.Error("SIGHUP: keys file rejected, keeping the current keys", "err", err)
		return
	}
	revoked := f.store.SetSource("file", ks)
	closed := 0
	if len(revoked) > 0 && f.onRevoked != nil {
		closed = f.onRevoked(revoked)
	}
	f.log.Info("SIGHUP: keys reloaded", "keys", len(ks), "revoked", len(revoked), "streams_closed", closed)
}
