package net

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"sync"

	"github.com/arbor-sync/arbor/tree"
)

// TLS session resumption. A client store keeps the last session ticket
// its server issued, so the next sync, in this process or the next, resumes
// the TLS session: the server sends no certificate and signs nothing, which
// saves bytes and a signature on every small sync. The pin is still checked
// on resumption (the session carries the certificate it was made with), and
// tickets are kept per pin, so a new pin never resumes an old session.

// metaSessionPrefix names the metadata entries that hold session tickets.
const metaSessionPrefix = "net/tls-session/"

// storeSessionCache is a tls.ClientSessionCache kept in a store's
// metadata, one entry per (pin, server name).
type storeSessionCache struct {
	store *tree.Store
	pin   string
	mu    sync.Mutex
}

func (c *storeSessionCache) name(key string) string {
	return metaSessionPrefix + c.pin + "/" + key
}

// Get returns the stored session for key, if any and readable.
func (c *storeSessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := c.store.Meta(c.name(key))
	if err != nil || len(b) < 4 {
		return nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, false
	}
	ticket, state := b[4:4+n], b[4+n:]
	ss, err := tls.ParseSessionState(state)
	if err != nil {
		return nil, false
	}
	cs, err := tls.NewResumptionState(ticket, ss)
	if err != nil {
		return nil, false
	}
	return cs, true
}

// Put stores (or, with cs nil, forgets) the session for key. Errors are
// dropped: a lost ticket only costs the next sync a full handshake.
func (c *storeSessionCache) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := c.store.NewBatch()
	if err != nil {
		return
	}
	if cs == nil {
		_ = b.DeleteMeta(c.name(key))
		_ = b.Commit(context.Background())
		return
	}
	ticket, ss, err := cs.ResumptionState()
	if err != nil || ss == nil {
		b.Discard()
		return
	}
	state, err := ss.Bytes()
	if err != nil {
		b.Discard()
		return
	}
	v := binary.BigEndian.AppendUint32(nil, uint32(len(ticket)))
	v = append(append(v, ticket...), state...)
	if err := b.SetMeta(c.name(key), v); err != nil {
		b.Discard()
		return
	}
	if err := b.Commit(context.Background()); err != nil && !errors.Is(err, tree.ErrClosed) {
		return
	}
}
