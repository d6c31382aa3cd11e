package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/arbor-sync/arbor/node"
)

func TestPackRoundTrip(t *testing.T) {
	for _, alg := range []node.Alg{node.XXH3, node.BLAKE3} {
		w := newPackWriter(alg)
		want := map[string][]byte{}
		for i := range 50 {
			raw := []byte(fmt.Sprintf("entry %d %s", i, bytes.Repeat([]byte{byte(i)}, i)))
			blob := i%3 == 0
			w.add(blob, alg.Sum(raw), raw)
			w.add(blob, alg.Sum(raw), raw) // a second add is ignored
			want[fmt.Sprint(blob, alg.Sum(raw))] = raw
		}
		pack, off, n := w.finish()
		es, err := decodePack(alg, pack)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 50 {
			t.Fatalf("%s: %d entries, want 50", alg, len(es))
		}
		byIndex, err := decodeIndex(alg, pack[off:off+n], off)
		if err != nil || len(byIndex) != len(es) {
			t.Fatalf("%s: index read alone: %d entries, %v", alg, len(byIndex), err)
		}
		for _, e := range es {
			got := pack[e.off : e.off+e.len]
			if !bytes.Equal(got, want[fmt.Sprint(e.blob, e.hash)]) || alg.Sum(got) != e.hash {
				t.Fatalf("%s: entry %s reads %q", alg, e.hash, got)
			}
		}
		if _, err := decodePack(otherAlg(alg), pack); !errors.Is(err, ErrCorruptPack) {
			t.Fatalf("pack of %s decoded as the other hash: %v", alg, err)
		}
	}
}

func otherAlg(a node.Alg) node.Alg {
	if a == node.XXH3 {
		return node.BLAKE3
	}
	return node.XXH3
}

// FuzzDecodePack: decoding never panics, and every entry it accepts lies
// inside the pack.
func FuzzDecodePack(f *testing.F) {
	w := newPackWriter(node.XXH3)
	w.add(false, node.XXH3.Sum([]byte("a")), []byte("a"))
	w.add(true, node.XXH3.Sum([]byte("bb")), []byte("bb"))
	p, _, _ := w.finish()
	f.Add(p)
	f.Add([]byte(packMagic + footerMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, alg := range []node.Alg{node.XXH3, node.BLAKE3} {
			es, err := decodePack(alg, b)
			if err != nil {
				continue
			}
			for _, e := range es {
				if e.off+e.len > uint64(len(b)) {
					t.Fatalf("entry %d+%d outside %d bytes", e.off, e.len, len(b))
				}
			}
		}
	})
}
