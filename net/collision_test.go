package net

import (
	"bytes"
	"context"
	"errors"
	"github.com/arbor-sync/arbor/internal/xxh3collide"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
)

// xxh3Collision is xxh3collide.Pair: two values of n bytes, one xxh3-128.
func xxh3Collision(n int, rest []byte) (a, b []byte) { return xxh3collide.Pair(n, rest) }

func TestXXH3CollisionIsReal(t *testing.T) {
	rest := make([]byte, 3000)
	for i := range rest {
		rest[i] = byte(rand.Uint32())
	}
	a, b := xxh3Collision(3000, rest)
	if bytes.Equal(a, b) || node.XXH3.Sum(a) != node.XXH3.Sum(b) {
		t.Fatalf("not a collision: equal bytes %v, sums %s %s", bytes.Equal(a, b), node.XXH3.Sum(a), node.XXH3.Sum(b))
	}
}

// TestEqualRootsDifferentRecordsWithXXH3 is the "can" row of the threat
// model for xxh3-128: two stores with different records and one root. A
// replica holder (or a server) who chooses values can pass a root
// comparison with other data; only a collision-resistant hash closes this.
func TestEqualRootsDifferentRecordsWithXXH3(t *testing.T) {
	rest := make([]byte, 2048)
	a, b := xxh3Collision(len(rest), rest)
	s1 := openStore(t, t.TempDir(), smallChunks)
	s2 := openStore(t, t.TempDir(), smallChunks)
	r1 := edit(t, s1, tree.Edit{Key: []byte("contract"), Value: a})
	r2 := edit(t, s2, tree.Edit{Key: []byte("contract"), Value: b})
	v1, v2 := get(t, s1, r1, []byte("contract")), get(t, s2, r2, []byte("contract"))
	if r1 != r2 || *v1 == *v2 {
		t.Fatalf("roots %s %s, values equal %v: expected equal roots over different records", r1.Short(), r2.Short(), *v1 == *v2)
	}
}

// TestPushCollisionRefused: a tenant who pushes a value whose chunk
// collides (xxh3) with one another key's value uses cannot replace that
// content: the push is refused whole (ErrRefused), nothing of it is
// stored, and every replica cloned later reads the victim's bytes. The
// other order is the "can" row: content stored first wins its address, so
// a victim whose later value collides with it is refused too.
func TestPushCollisionRefused(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: carolTok, ClientID: "mallory", Read: scope.Prefixes([]byte("t/")), Write: scope.Prefixes([]byte("t/"))})
	})
	rest := make([]byte, 2048)
	for i := range rest {
		rest[i] = byte(i * 7)
	}
	victim, forged := xxh3Collision(len(rest), rest)
	edit(t, ts.store, tree.Edit{Key: []byte("shared/contract"), Value: victim})
	before := ref(t, ts.store, HeadRef)

	m := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, m, ts.opts(carolTok))
	edit(t, m, tree.Edit{Key: []byte("t/x"), Value: forged}, tree.Edit{Key: []byte("t/y"), Value: []byte("innocent")})
	_, err := Sync(context.Background(), m, ts.opts(carolTok))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "different bytes") {
		t.Fatalf("a push of colliding content: %v, want ErrRefused", err)
	}
	if ref(t, ts.store, HeadRef) != before {
		t.Fatal("a refused push moved the server's head")
	}
	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(alice))
	if v := get(t, c, ref(t, c, HeadRef), []byte("shared/contract")); v == nil || *v != string(victim) {
		t.Fatal("a replica cloned after the attack does not read the victim's bytes")
	}
	if v := get(t, c, ref(t, c, HeadRef), []byte("t/y")); v != nil {
		t.Fatal("part of a refused push was applied")
	}

	// The other order: the attacker's content is stored first; the
	// victim's colliding value is refused (a denial of that one write).
	ts2 := startServer(t, smallChunks, nil)
	edit(t, ts2.store, tree.Edit{Key: []byte("t/x"), Value: forged})
	v := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, v, ts2.opts(alice))
	edit(t, v, tree.Edit{Key: []byte("shared/contract"), Value: victim})
	if _, err := Sync(context.Background(), v, ts2.opts(alice)); !errors.Is(err, ErrRefused) {
		t.Fatalf("the victim's colliding write after the attacker's: %v, want ErrRefused", err)
	}
	if got := get(t, v, ref(t, v, HeadRef), []byte("shared/contract")); got == nil || *got != string(victim) {
		t.Fatal("the refused write is not kept locally")
	}
}
