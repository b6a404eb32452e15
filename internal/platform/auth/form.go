package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// maxTokenSize bounds the tokens verify reads. Blueprint's are under 1 KiB;
// a bigger one is refused before anything in it is decoded.
const maxTokenSize = 4 << 10

// compactJWS reports whether token is three base64url segments, at most
// maxTokenSize bytes.
func compactJWS(token string) bool {
	if len(token) > maxTokenSize {
		return false
	}
	dots := 0
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

// uniqueNames returns an error if the header or the payload of token, a JWS
// the JWT library parsed, names a member twice in one object, at any depth.
//
// RFC 7515 §4 and RFC 7519 §4 let a parser keep the last of two members of
// the same name. The library does, another reader may keep the first, and
// then one signed token says two things ("alg":"none","alg":"EdDSA").
func uniqueNames(token string) error {
	header, rest, _ := strings.Cut(token, ".")
	payload, _, _ := strings.Cut(rest, ".")
	for _, segment := range []string{header, payload} {
		data, err := base64.RawURLEncoding.Strict().DecodeString(segment)
		if err != nil {
			return err
		}
		if err := uniqueNamesIn(json.NewDecoder(bytes.NewReader(data))); err != nil {
			return err
		}
	}
	return nil
}

// uniqueNamesIn reads the next JSON value from dec and returns an error if
// an object in it names a member twice. Names are compared as decoded, so
// "s\u0075b" is a second "sub".
func uniqueNamesIn(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	open, ok := tok.(json.Delim)
	if !ok {
		return nil // a string, number, boolean or null
	}
	var seen map[string]bool
	if open == '{' {
		seen = map[string]bool{}
	}
	for dec.More() {
		if seen != nil {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			name, _ := tok.(string) // the decoder returns names as strings
			if seen[name] {
				return fmt.Errorf("member %q appears twice", name)
			}
			seen[name] = true
		}
		if err := uniqueNamesIn(dec); err != nil {
			return err
		}
	}
	_, err = dec.Token() // the closing ] or }
	return err
}
