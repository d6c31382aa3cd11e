package net

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
)

// No silent loss: no local write is dropped, and no deleted record comes
// back, unless the caller asked for it.

// TestNoHistoryNeedsAChoice: a store with records and no base neither
// pushes them (which would bring back what the server deleted) nor drops
// them unless told; Adopt takes the server's state and lists what it
// dropped; Merge pushes.
func TestNoHistoryNeedsAChoice(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 100, 1)
	// The server deletes 10 records a lost replica still holds.
	var dels []tree.Edit
	for i := 0; i < 10; i++ {
		dels = append(dels, tree.Edit{Key: rec(i), Delete: true})
	}
	server := edit(t, ts.store, dels...)

	restored := func() *tree.Store {
		c := openStore(t, t.TempDir(), smallChunks)
		put(t, c, 0, 100, 1)                                        // the old state, as a dump
		edit(t, c, tree.Edit{Key: rec(50), Value: []byte("local")}) // and one record that differs
		return c
	}
	c := restored()
	head := ref(t, c, HeadRef)
	_, err := Sync(context.Background(), c, ts.opts(alice))
	if !errors.Is(err, ErrNoSyncHistory) || !strings.Contains(err.Error(), "11 of its records differ") {
		t.Fatalf("first sync without a choice: %v, want ErrNoSyncHistory counting 11 records", err)
	}
	if ref(t, c, HeadRef) != head || ref(t, ts.store, HeadRef) != server {
		t.Fatal("a sync that stopped for a choice changed a store")
	}
	if _, ok, _ := c.Ref(BaseRef); ok {
		t.Fatal("a sync that stopped for a choice set a base")
	}

	opts := ts.opts(alice)
	opts.Adopt = true
	res, err := Sync(context.Background(), c, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pushed != 0 || len(res.Discarded) != 11 {
		t.Fatalf("adopt: pushed %d, discarded %d; want 0 and 11", res.Pushed, len(res.Discarded))
	}
	for _, d := range res.Discarded {
		if string(d.Key) == string(rec(50)) && (d.Local == nil || string(*d.Local) != "local" || d.Server == nil) {
			t.Fatalf("adopt reports %q as %v → %v", d.Key, d.Local, d.Server)
		}
	}
	if ref(t, ts.store, HeadRef) != server {
		t.Fatal("adopt changed the server")
	}
	checkConverged(t, ts, c)

	c = restored()
	opts = ts.opts(alice)
	opts.Merge = true
	res = mustSync(t, c, opts)
	if res.Pushed != 100 || len(res.Overridden) != 1 || string(res.Overridden[0].Key) != string(rec(50)) {
		t.Fatalf("merge: pushed %d, overridden %v; want 100 pushed and key 50 overridden", res.Pushed, res.Overridden)
	}
	if v := get(t, ts.store, ref(t, ts.store, HeadRef), rec(3)); v == nil {
		t.Fatal("merge: a record the server deleted did not come back, as Merge says it does")
	}
	checkConverged(t, ts, c)
}

// TestNarrowedScopeKeepsLocalWrites: a replica whose scope narrows, by the
// server's read scope or its own choice, pushes its unpushed writes from
// the old scope first.
func TestNarrowedScopeKeepsLocalWrites(t *testing.T) {
	tok := "tok-dave-0123456789"
	grant := func(read scope.Scope) []Token {
		return append([]Token{{Token: tok, ClientID: "dave", Read: read}}, testTokens...)
	}
	ab := scope.Prefixes([]byte("key-0001"), []byte("key-0002"))
	ts := startServer(t, smallChunks, func(o *ServerOptions) { o.Tokens = grant(ab) })
	put(t, ts.store, 100, 300, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(tok))

	// The server narrows the read scope to key-0001 while a write under
	// key-0002 waits to be pushed: the token may no longer write there, so
	// the sync fails naming it and the write stays local...
	edit(t, c, tree.Edit{Key: rec(250), Value: []byte("unpushed")}, tree.Edit{Key: rec(150), Value: []byte("in scope")})
	ts.srv.SetTokens(grant(scope.Prefixes([]byte("key-0001"))))
	head := ref(t, c, HeadRef)
	if _, err := Sync(context.Background(), c, ts.opts(tok)); !errors.Is(err, ErrUnpushable) || !strings.Contains(err.Error(), "key-000250") {
		t.Fatalf("narrowed under an unpushed write: %v, want ErrUnpushable naming key-000250", err)
	}
	if ref(t, c, HeadRef) != head {
		t.Fatal("a sync that stopped on an unpushable write changed the replica")
	}
	// ...until the user drops it on purpose, and hears of it.
	opts := ts.opts(tok)
	opts.DiscardUnpushable = true
	res := mustSync(t, c, opts)
	if res.Accepted != 1 || len(res.Discarded) != 1 || string(res.Discarded[0].Key) != string(rec(250)) {
		t.Fatalf("accepted %d, discarded %v; want key-000150 pushed and key-000250 reported", res.Accepted, res.Discarded)
	}
	if v := get(t, ts.store, ref(t, ts.store, HeadRef), rec(150)); v == nil || *v != "in scope" {
		t.Fatalf("key 150 on the server: %v", v)
	}

	// The client narrows itself.
	// The client narrows itself: its unpushed write outside the new scope
	// goes up first.
	ts.srv.SetTokens(grant(ab))
	edit(t, c, tree.Edit{Key: rec(160), Value: []byte("before narrowing")})
	opts = ts.opts(tok)
	opts.Scope = scope.Prefixes([]byte("key-00010"))
	mustSync(t, c, opts)
	if v := get(t, ts.store, ref(t, ts.store, HeadRef), rec(160)); v == nil || *v != "before narrowing" {
		t.Fatalf("a write outside the client's new scope was dropped: server has %v", v)
	}
}

// TestScopeChangesModel: clients write while their scopes narrow and widen
// at random, by their own choice and the server's; every accepted write is
// on the server, and every local write is on the server, still local, or
// reported.
func TestScopeChangesModel(t *testing.T) {
	prefixes := []string{"key-0000", "key-0001", "key-0002", "key-0003"}
	randomScope := func(r *rand.Rand) scope.Scope {
		var ps [][]byte
		for _, p := range prefixes {
			if r.IntN(2) == 0 {
				ps = append(ps, []byte(p))
			}
		}
		if len(ps) == 0 {
			ps = append(ps, []byte(prefixes[r.IntN(len(prefixes))]))
		}
		return scope.Prefixes(ps...)
	}
	const clients = 3
	r := rand.New(rand.NewPCG(7, 11))
	toks := make([]Token, clients)
	for i := range toks {
		toks[i] = Token{Token: fmt.Sprintf("tok-model-%d-0123456789", i), ClientID: fmt.Sprint("c", i), Read: scope.All}
	}
	ts := startServer(t, smallChunks, func(o *ServerOptions) { o.Tokens = toks })
	put(t, ts.store, 0, 400, 1)
	stores := make([]*tree.Store, clients)
	for i := range stores {
		stores[i] = openStore(t, t.TempDir(), smallChunks)
		mustSync(t, stores[i], ts.opts(toks[i].Token))
	}
	pending := make([]map[string]string, clients) // local writes not yet confirmed
	discard := make([]bool, clients)              // the last sync found unpushable writes
	for i := range pending {
		pending[i] = map[string]string{}
	}
	for round := range 12 {
		if r.IntN(2) == 0 {
			i := r.IntN(clients)
			toks[i].Read = randomScope(r)
			ts.srv.SetTokens(toks)
		}
		for i, c := range stores {
			sc, err := StoredScope(c)
			if err != nil {
				t.Fatal(err)
			}
			// Local writes inside the replica's scope (others are refused).
			want := pending[i]
			for range 1 + r.IntN(4) {
				k := rec(r.IntN(400))
				if !sc.Contains(k) {
					continue
				}
				v := fmt.Sprintf("c%d-r%d", i, round)
				edit(t, c, tree.Edit{Key: k, Value: []byte(v)})
				want[string(k)] = v
			}
			opts := ts.opts(toks[i].Token)
			opts.DiscardUnpushable = discard[i]
			if r.IntN(3) == 0 {
				opts.Scope = randomScope(r)
			}
			res, err := Sync(context.Background(), c, opts)
			if errors.Is(err, ErrForbiddenScope) || errors.Is(err, ErrUnpushable) {
				// The scope asked for and the read scope do not meet, or the
				// token may no longer write some of the local changes: nothing
				// happened, and the writes are still local (the next round
				// discards the unpushable ones on purpose).
				discard[i] = errors.Is(err, ErrUnpushable)
				for k, v := range want {
					if got := get(t, c, ref(t, c, HeadRef), []byte(k)); got == nil || *got != v {
						t.Fatalf("round %d client %d: a refused sync lost local write %s", round, i, k)
					}
				}
				continue
			}
			if err != nil {
				t.Fatalf("round %d client %d: %v", round, i, err)
			}
			pending[i] = map[string]string{}
			lost := map[string]bool{}
			for _, o := range append(res.Overridden, res.Discarded...) {
				lost[string(o.Key)] = true
			}
			head := ref(t, ts.store, HeadRef)
			for k, v := range want {
				if lost[k] {
					continue // reported
				}
				if got := get(t, ts.store, head, []byte(k)); got == nil || *got != v {
					t.Fatalf("round %d client %d: local write %s=%s neither on the server (%v) nor reported", round, i, k, v, got)
				}
			}
		}
	}
}
