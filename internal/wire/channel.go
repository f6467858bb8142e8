package wire

// MaxChannelLen is the longest channel name.
const MaxChannelLen = 200

// ValidChannel reports whether name is a channel a client may subscribe to: 1-200 bytes of
// [A-Za-z0-9_.:-], starting with a letter or digit (names starting with '_' are reserved
// for the gateway's own probes).
func ValidChannel(name string) bool {
	if name == "" || len(name) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '_' && c != '.' && c != ':' && c != '-')) {
			return false
		}
	}
	return true
}
