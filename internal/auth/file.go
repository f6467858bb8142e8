package auth

import (
	"encoding/json"
	"fmt"
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
