package arbor_test

import (
	"bytes"
	"context"
	"testing"
	"testing/quick"

	"github.com/arbor-sync/arbor"
)

// TestJSONLRoundTripsAnyBytes: ExportJSONL then Import with FormatJSONL
// gives the same root for random binary keys and values.
func TestJSONLRoundTripsAnyBytes(t *testing.T) {
	ctx := context.Background()
	check := func(recs map[string][]byte) bool {
		src, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		b := new(arbor.Batch)
		for k, v := range recs {
			if k != "" && len(k) <= 4096 {
				b.Put([]byte(k), v)
			}
		}
		if err := src.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := src.ExportJSONL(ctx, &out, arbor.Range{}, 0); err != nil {
			t.Fatal(err)
		}
		dst, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		if _, err := dst.Import(ctx, &out, arbor.ImportOptions{Format: arbor.FormatJSONL}); err != nil {
			t.Fatal(err)
		}
		a, _ := src.Root(ctx)
		c, _ := dst.Root(ctx)
		return a == c
	}
	if err := quick.Check(check, &quick.Config{MaxCount: 30}); err != nil {
		t.Fatal(err)
	}
}
