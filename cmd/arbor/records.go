package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"

	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// The JSON encoding of keys and values, shared by every --json output and
// by 'import --format jsonl':
//
// A byte string that is valid UTF-8 is a JSON string in the plain field
// ("key", "value", "old", "new", ...). Any other byte string is standard
// base64 (RFC 4648, with padding) in the same field name with "_b64"
// appended ("key_b64", "value_b64", ...). Exactly one of the two is
// present, so every byte string round-trips; text stays readable.

// textOrB64 splits b into the plain-text form or the base64 form: exactly
// one of the results is non-nil.
func textOrB64(b []byte) (text, b64 *string) {
	if utf8.Valid(b) {
		s := string(b)
		return &s, nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return nil, &s
}

// fromTextOrB64 decodes a field pair written by textOrB64. name is the
// plain field's name, for the error. It reports ok=false when neither
// field is present.
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

// recordJSON is one record of 'export --json' and 'import --format jsonl'.
type recordJSON struct {
	Key      *string `json:"key,omitempty"`
	KeyB64   *string `json:"key_b64,omitempty"`
	Value    *string `json:"value,omitempty"`
	ValueB64 *string `json:"value_b64,omitempty"`
}

func newRecordJSON(key, value []byte) recordJSON {
	var r recordJSON
	r.Key, r.KeyB64 = textOrB64(key)
	r.Value, r.ValueB64 = textOrB64(value)
	return r
}

// newJSONEncoder returns an encoder for JSON lines: one compact object per
// line, '<', '>' and '&' left as they are.
func newJSONEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// writeJSON writes v as one JSON line.
func writeJSON(w io.Writer, v any) error { return newJSONEncoder(w).Encode(v) }

// parseJSONRecord parses one line of 'import --format jsonl'.
func parseJSONRecord(line []byte) (key, value []byte, err error) {
	if !utf8.Valid(line) {
		// encoding/json would turn the bad bytes into U+FFFD silently.
		return nil, nil, fmt.Errorf("%w: not valid UTF-8; give binary keys and values in base64 as \"key_b64\" and \"value_b64\"", arbor.ErrBadInput)
	}
	var r recordJSON
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", arbor.ErrBadInput, err)
	}
	if dec.More() {
		return nil, nil, fmt.Errorf("%w: more than one JSON value on the line", arbor.ErrBadInput)
	}
	key, ok, err := fromTextOrB64("key", r.Key, r.KeyB64)
	if err == nil && !ok {
		err = errors.New(`want "key" (a string) or "key_b64" (base64)`)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", arbor.ErrBadInput, err)
	}
	value, ok, err = fromTextOrB64("value", r.Value, r.ValueB64)
	if err == nil && !ok {
		err = errors.New(`want "value" (a string) or "value_b64" (base64)`)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", arbor.ErrBadInput, err)
	}
	return key, value, nil
}

// exportJSON writes the records in r as JSON lines (see recordJSON),
// at most limit of them (0: all).
func exportJSON(ctx context.Context, db *arbor.DB, w io.Writer, r arbor.Range, limit int) (int64, error) {
	bw := bufio.NewWriterSize(w, 1<<16)
	enc := newJSONEncoder(bw)
	it := db.NewIterator(ctx, r)
	defer it.Close()
	var n int64
	for (limit <= 0 || n < int64(limit)) && it.Next() {
		if err := enc.Encode(newRecordJSON(it.Key(), it.Value())); err != nil {
			return n, err
		}
		n++
	}
	if err := it.Close(); err != nil {
		return n, err
	}
	return n, bw.Flush()
}

// importChunk is how many records importJSONL sorts and applies at a time,
// as arbor.DB.Import does: it bounds memory while the import stays one
// atomic commit.
const importChunk = 1 << 20

// importJSONL is arbor.DB.Import for JSON lines with the key_b64/value_b64
// fields, which the library's JSON-lines format does not read: every line
// is parsed and checked first, and all records commit at once or none do.
// On a partial replica a key outside its scope is refused, as by Put.
func importJSONL(ctx context.Context, db *arbor.DB, r io.Reader, progress func(records, bytes int64)) (arbor.ImportStats, error) {
	var st arbor.ImportStats
	sc, err := db.Scope()
	if err != nil {
		return st, err
	}
	store := db.Store()
	old, ok, err := store.Ref(arbor.HeadRef)
	if err != nil {
		return st, err
	}
	root := old
	if !ok {
		root = node.EmptyRoot
	}
	b, err := store.NewBatch()
	if err != nil {
		return st, err
	}
	defer b.Discard()

	type rec struct {
		key, value []byte
		seq        int
	}
	var chunk []rec
	flush := func() error {
		// Sorted by key; the last line for a key wins.
		slices.SortFunc(chunk, func(a, b rec) int {
			if c := bytes.Compare(a.key, b.key); c != 0 {
				return c
			}
			return cmp.Compare(a.seq, b.seq)
		})
		edits := make([]tree.Edit, 0, len(chunk))
		for i, r := range chunk {
			if i+1 < len(chunk) && bytes.Equal(r.key, chunk[i+1].key) {
				continue
			}
			edits = append(edits, tree.Edit{Key: r.key, Value: r.value})
		}
		root, err = b.Apply(ctx, root, edits)
		chunk = chunk[:0]
		return err
	}
	in := bufio.NewScanner(r)
	// JSON escapes and base64 make a line longer than its record.
	in.Buffer(make([]byte, 1<<20), 8*(node.MaxValueSize+node.MaxKeySize)+1024)
	var line int
	var consumed int64
	for in.Scan() {
		line++
		text := in.Bytes()
		consumed += int64(len(text)) + 1
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		key, value, err := parseJSONRecord(text)
		if err != nil {
			return st, fmt.Errorf("import: line %d: %w", line, err)
		}
		if len(key) == 0 || len(key) > node.MaxKeySize {
			return st, fmt.Errorf("import: line %d: %w: key of %d bytes (must be 1..%d)", line, arbor.ErrBadInput, len(key), node.MaxKeySize)
		}
		if err := sc.Check(key); err != nil {
			return st, fmt.Errorf("import: line %d: %w", line, err)
		}
		chunk = append(chunk, rec{key: key, value: value, seq: line})
		st.Records++
		if len(chunk) >= importChunk {
			if err := flush(); err != nil {
				return st, fmt.Errorf("import: %w", err)
			}
		}
		if progress != nil && st.Records%8192 == 0 {
			progress(st.Records, consumed)
		}
	}
	if err := in.Err(); err != nil {
		return st, fmt.Errorf("import: after line %d: %w", line, err)
	}
	if err := flush(); err != nil {
		return st, fmt.Errorf("import: %w", err)
	}
	if progress != nil {
		progress(st.Records, consumed)
	}
	b.ExpectRef(arbor.HeadRef, old, ok)
	b.SetRef(arbor.HeadRef, root)
	if err := b.Commit(ctx); err != nil {
		return st, fmt.Errorf("import: %w", err)
	}
	st.Root = root
	return st, nil
}
