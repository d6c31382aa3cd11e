package main

import (
	"encoding/json"
	"io"

	"github.com/arbor-sync/arbor"
)

// The JSON encoding of keys and values, shared by every --json output and
// by 'import --format jsonl' (the library's JSON lines, arbor.RecordJSON):
//
// A byte string that is valid UTF-8 is a JSON string in the plain field
// ("key", "value", "old", "new", ...). Any other byte string is standard
// base64 (RFC 4648, with padding) in the same field name with "_b64"
// appended ("key_b64", "value_b64", ...). Exactly one of the two is
// present, so every byte string round-trips; text stays readable.

// textOrB64 splits b into the plain-text form or the base64 form: exactly
// one of the results is non-nil.
func textOrB64(b []byte) (text, b64 *string) { return arbor.TextOrBase64(b) }

// newRecordJSON is one record of 'export --json' and 'import --format jsonl'.
func newRecordJSON(key, value []byte) arbor.RecordJSON { return arbor.NewRecordJSON(key, value) }

// newJSONEncoder returns an encoder for JSON lines: one compact object per
// line, '<', '>' and '&' left as they are.
func newJSONEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// writeJSON writes v as one JSON line.
func writeJSON(w io.Writer, v any) error { return newJSONEncoder(w).Encode(v) }
