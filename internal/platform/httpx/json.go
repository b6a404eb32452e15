package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
)

// MaxBodyBytes caps every request body: a client cannot make a service
// buffer more than this, and gets 413 when it tries.
const MaxBodyBytes = 64 << 10

// Validator is implemented by request types. Valid returns the broken rules
// as field name → message, or an empty map when the request is valid.
type Validator interface {
	Valid(ctx context.Context) map[string]string
}

// ReadBody reads the whole body of r, at most MaxBodyBytes of it.
func ReadBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, apperr.New(apperr.TooLarge, "body_too_large",
				fmt.Sprintf("the request body is larger than %d bytes", MaxBodyBytes))
		}
		return nil, apperr.Wrap(apperr.BadRequest, "unreadable_body", "the request body could not be read", err)
	}
	return body, nil
}

// Decode reads r's body as one JSON object into a T and validates it.
// Parse failures (malformed JSON, not an object, unknown field, wrong type)
// are BadRequest; broken rules are Invalid with the fields named; a body over
// the cap is TooLarge.
func Decode[T Validator](w http.ResponseWriter, r *http.Request) (T, error) {
	var v T
	body, err := ReadBody(w, r)
	if err != nil {
		return v, err
	}
	if err := Unmarshal(body, &v); err != nil {
		return v, err
	}
	if problems := v.Valid(r.Context()); len(problems) > 0 {
		return v, apperr.Validation(problems)
	}
	return v, nil
}

// Unmarshal parses body as exactly one JSON object into v, rejecting unknown
// fields, and explains any failure as a BadRequest a client can act on.
func Unmarshal(body []byte, v any) error {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return apperr.New(apperr.BadRequest, "malformed_json", "the request body is empty; send a JSON object")
	}
	if trimmed[0] != '{' {
		return apperr.New(apperr.BadRequest, "malformed_json", "the request body must be a JSON object")
	}
	// JSON is UTF-8 (RFC 8259 §8.1). encoding/json would turn bad bytes into
	// U+FFFD without a word, storing something the client never sent.
	if !utf8.Valid(trimmed) {
		return apperr.New(apperr.BadRequest, "invalid_utf8", "the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return explainDecodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return apperr.New(apperr.BadRequest, "malformed_json", "the request body must hold one JSON object and nothing after it")
	}
	// No text field of any request may hold U+0000: PostgreSQL cannot store
	// it and refuses the whole statement, which would make a client's byte
	// a server error (and count against the service's breaker).
	if hasEscapedNUL(trimmed) {
		return apperr.New(apperr.BadRequest, "nul_character", `a string in the request body holds the NUL character (\u0000)`)
	}
	return nil
}

// hasEscapedNUL reports whether a JSON text (already known to be valid)
// holds the escape \u0000 in a string. JSON strings cannot hold a raw NUL
// byte, so the escape is the only way one gets in.
func hasEscapedNUL(text []byte) bool {
	for i := 0; i < len(text); i++ {
		if text[i] != '\\' {
			continue
		}
		// An escape: a backslash and what it escapes, which is skipped so
		// that \\u0000 (a backslash, then "u0000") is not taken for one.
		if i+5 < len(text) && text[i+1] == 'u' && string(text[i+2:i+6]) == "0000" {
			return true
		}
		i++
	}
	return false
}

func explainDecodeError(err error) error {
	if e, ok := errors.AsType[*json.SyntaxError](err); ok {
		return apperr.Wrap(apperr.BadRequest, "malformed_json",
			fmt.Sprintf("the request body is not valid JSON (at byte %d)", e.Offset), err)
	}
	if e, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return &apperr.Error{
			Kind: apperr.BadRequest, Code: "wrong_type", Err: err,
			Detail: fmt.Sprintf("field %q must be a JSON %s", e.Field, jsonKind(e.Type.Kind().String())),
			Fields: []apperr.FieldError{{Field: e.Field, Message: "must be a JSON " + jsonKind(e.Type.Kind().String())}},
		}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return apperr.Wrap(apperr.BadRequest, "malformed_json", "the request body is truncated JSON", err)
	}
	// encoding/json reports unknown fields only as text: `json: unknown field "x"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		field, _ := strconv.Unquote(name)
		return &apperr.Error{
			Kind: apperr.BadRequest, Code: "unknown_field", Err: err,
			Detail: fmt.Sprintf("field %s is not part of this request", name),
			Fields: []apperr.FieldError{{Field: field, Message: "unknown field"}},
		}
	}
	return apperr.Wrap(apperr.BadRequest, "malformed_json", "the request body could not be parsed", err)
}

// jsonKind names a Go kind the way a JSON client thinks of it.
func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "integer"
	case strings.HasPrefix(goKind, "float"):
		return "number"
	case goKind == "bool":
		return "boolean"
	case goKind == "struct", goKind == "map":
		return "object"
	case goKind == "slice", goKind == "array":
		return "array"
	default:
		return goKind
	}
}

// Encode writes v as JSON with the given status. It encodes into a buffer
// first so that a value that cannot be encoded still becomes a clean 500.
func Encode(w http.ResponseWriter, status int, v any) error {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
	return nil
}
