package arbor

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// JSON lines carry any bytes. A key or value that is valid UTF-8 is a JSON
// string in the plain field ("key", "value"); any other byte string is
// standard base64 (RFC 4648, with padding) in the field of the same name
// with "_b64" appended ("key_b64", "value_b64"). Exactly one of the two is
// present, so every record round-trips (ExportJSONL, then Import with
// FormatJSONL) and text stays readable.

// RecordJSON is one record of ExportJSONL and of Import's FormatJSONL.
type RecordJSON struct {
	Key      *string `json:"key,omitempty"`
	KeyB64   *string `json:"key_b64,omitempty"`
	Value    *string `json:"value,omitempty"`
	ValueB64 *string `json:"value_b64,omitempty"`
}

// NewRecordJSON returns key and value in the JSON-lines form.
func NewRecordJSON(key, value []byte) RecordJSON {
	var r RecordJSON
	r.Key, r.KeyB64 = TextOrBase64(key)
	r.Value, r.ValueB64 = TextOrBase64(value)
	return r
}

// TextOrBase64 splits b into the plain-text form (valid UTF-8) or the
// base64 form: exactly one of the results is non-nil.
func TextOrBase64(b []byte) (text, b64 *string) {
	if utf8.Valid(b) {
		s := string(b)
		return &s, nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return nil, &s
}

// fromTextOrB64 decodes a field pair written by TextOrBase64. name is the
// plain field's name, for the error; ok is false when neither is present.
func fromTextOrB64(name string, text, b64 *string) (b []byte, ok bool, err error) {
	switch {
	case text != nil && b64 != nil:
		return nil, false, fmt.Errorf("both %q and %q given; want one", name, name+"_b64")
	case text != nil:
		return []byte(*text), true, nil
	case b64 != nil:
		b, err := base64.StdEncoding.DecodeString(*b64)
		if err != nil {
			return nil, false, fmt.Errorf("%q: %v", name+"_b64", err)
		}
		return b, true, nil
	}
	return nil, false, nil
}

// ParseRecordJSON parses one JSON-lines record; errors wrap ErrBadInput.
func ParseRecordJSON(line []byte) (key, value []byte, err error) {
	if !utf8.Valid(line) {
		// encoding/json would turn the bad bytes into U+FFFD silently.
		return nil, nil, fmt.Errorf("%w: not valid UTF-8; give binary keys and values in base64 as \"key_b64\" and \"value_b64\"", ErrBadInput)
	}
	var r RecordJSON
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadInput, err)
	}
	if dec.More() {
		return nil, nil, fmt.Errorf("%w: more than one JSON value on the line", ErrBadInput)
	}
	key, ok, err := fromTextOrB64("key", r.Key, r.KeyB64)
	if err == nil && !ok {
		err = errors.New(`want "key" (a string) or "key_b64" (base64)`)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadInput, err)
	}
	value, ok, err = fromTextOrB64("value", r.Value, r.ValueB64)
	if err == nil && !ok {
		err = errors.New(`want "value" (a string) or "value_b64" (base64)`)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadInput, err)
	}
	return key, value, nil
}
