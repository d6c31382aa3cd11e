package net

import (
	"cmp"
	"encoding/binary"
	"fmt"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
)

// Hello flags.
const (
	flagAudit = 1 << 0 // the client only wants the server's root
	flagPush  = 1 << 1 // the client has local changes and will push first
	flagWalk  = 1 << 2 // the client will walk whatever its base (it distrusts it)
	// flagFresh: the client's store holds nothing yet and takes the
	// server's hash and chunker config, so the server does not refuse a
	// difference. A server that predates it ignores it and refuses.
	flagFresh = 1 << 3
)

// Error codes carried by an Error frame.
const (
	codeUnauthorized uint64 = 1
	codeProtocol     uint64 = 2
	codeTooLarge     uint64 = 3
	codeForbidden    uint64 = 4
	codeUnavailable  uint64 = 5
	codeInternal     uint64 = 6
	codeConfig       uint64 = 7
	codeLimit        uint64 = 8
	codeScope        uint64 = 9  // forbidden scope: a push outside the token's write scope
	codeRefused      uint64 = 10 // a push whose content collides with stored content
	codeVersion      uint64 = 11 // the peers speak different protocol versions
	codeRegrant      uint64 = 12 // the session's token changed: reconnect to get the new grant
)

// maxToken bounds a token's length on the wire.
const maxToken = 1024

// A store's hash algorithm is named in Hello and Welcome by its node.Alg
// byte (zero: node.XXH3). Their first hash field (Hello's base, Welcome's
// root) is 16 bytes wide, as arbor/2 first defined it: with a wider hash it
// holds zeros and the whole hash follows the capabilities, so a peer that
// knows only xxh3 still reads the algorithm byte and refuses it clearly.

// Hello and Welcome end with fields that later revisions of arbor/2 may
// extend: a decoder ignores bytes after the fields it knows, and each side
// uses a newer field or message only if the other's capabilities (Caps)
// announce it. No capability is defined yet; every other message decodes
// strictly.

type hello struct {
	Token  string
	Base   node.Hash // zero: the client has no base
	Flags  byte
	Config chunker.Config
	Hash   node.Alg // the client store's hash algorithm (zero: node.XXH3)
	Caps   uint64   // capabilities of the client
}

// appendFirstHash appends the 16-byte first hash field of Hello or Welcome.
func appendFirstHash(b []byte, alg node.Alg, h node.Hash) []byte {
	if alg == node.XXH3 || !alg.Valid() {
		return alg.Append(b, h)
	}
	return node.XXH3.Append(b, node.Hash{})
}

// appendWideHash appends, for a wider hash than xxh3, the whole first hash
// after the capabilities.
func appendWideHash(b []byte, alg node.Alg, h node.Hash) []byte {
	if alg == node.XXH3 || !alg.Valid() {
		return b
	}
	return alg.Append(b, h)
}

// readWideHash reads the first hash of Hello or Welcome: first16 is the
// 16-byte field; a wider algorithm's hash follows the capabilities.
func readWideHash(d *dec, alg node.Alg, first16 node.Hash, what string) node.Hash {
	if alg == node.XXH3 || !alg.Valid() {
		return first16 // an unknown algorithm: the caller refuses it
	}
	if !first16.IsZero() {
		d.fail(what + " (16-byte field must be zero with " + alg.String() + ")")
	}
	d.alg = alg
	return d.hash(what)
}

func (m hello) encode() []byte {
	alg := cmp.Or(m.Hash, node.XXH3)
	b := appendBytes(nil, []byte(m.Token))
	b = appendFirstHash(b, alg, m.Base)
	b = append(b, m.Flags)
	b = appendConfig(b, m.Config)
	b = append(b, byte(alg))
	b = binary.AppendUvarint(b, m.Caps)
	return appendWideHash(b, alg, m.Base)
}

func decodeHello(p []byte) (hello, error) {
	d := newDec(msgHello, node.XXH3, p)
	var m hello
	m.Token = string(d.bytes("token", maxToken))
	m.Base = d.hash("base root")
	m.Flags = d.byte1("flags")
	m.Config = decodeConfig(d)
	m.Hash = node.Alg(d.byte1("hash algorithm"))
	m.Caps = d.uvarint("capabilities")
	m.Base = readWideHash(d, m.Hash, m.Base, "base root")
	d.rest() // fields of a later revision
	return m, d.done()
}

type welcome struct {
	ClientID string
	Root     node.Hash
	Retained bool // the client's base is retained: the changes path is open
	Config   chunker.Config
	Read     scope.Scope // the token's read scope
	Write    scope.Scope // the token's write scope
	RootNode []byte      // the root node's bytes when the client will need to walk; may be empty
	Hash     node.Alg    // the server store's hash algorithm (zero: node.XXH3)
	Caps     uint64      // capabilities of the server
}

func (m welcome) encode() []byte {
	alg := cmp.Or(m.Hash, node.XXH3)
	b := appendBytes(nil, []byte(m.ClientID))
	b = appendFirstHash(b, alg, m.Root)
	r := byte(0)
	if m.Retained {
		r = 1
	}
	b = append(b, r)
	b = appendConfig(b, m.Config)
	b = appendScope(b, orAll(m.Read))
	b = appendScope(b, orAll(m.Write))
	b = appendBytes(b, m.RootNode)
	b = append(b, byte(alg))
	b = binary.AppendUvarint(b, m.Caps)
	return appendWideHash(b, alg, m.Root)
}

// maxScopeRanges bounds the ranges of a scope on the wire.
const maxScopeRanges = 1 << 12

// maxScopeKey bounds a scope boundary key on the wire.
const maxScopeKey = 64 << 10

// appendScope encodes a scope: n, n × (start flag:u8 [, start:bytes], end
// flag:u8 [, end:bytes]); a flag 0 is unbounded.
func appendScope(b []byte, s scope.Scope) []byte {
	rs := s.Ranges()
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for _, r := range rs {
		for _, k := range [][]byte{r.Start, r.End} {
			if k == nil {
				b = append(b, 0)
				continue
			}
			b = appendBytes(append(b, 1), k)
		}
	}
	return b
}

func decodeScope(d *dec) scope.Scope {
	n := d.uvarint("scope range count")
	if d.err == nil && n > maxScopeRanges {
		d.fail("scope range count")
	}
	if d.err != nil {
		return scope.Scope{}
	}
	rs := make([]tree.Range, 0, n)
	for range n {
		var r tree.Range
		for i, what := range []string{"scope start", "scope end"} {
			switch d.byte1(what) {
			case 0:
			case 1:
				k := append([]byte{}, d.bytes(what, maxScopeKey)...)
				if i == 0 {
					r.Start = k
				} else {
					r.End = k
				}
			default:
				d.fail(what)
			}
		}
		rs = append(rs, r)
	}
	if d.err != nil {
		return scope.Scope{}
	}
	return scope.New(rs...)
}

func decodeWelcome(p []byte) (welcome, error) {
	d := newDec(msgWelcome, node.XXH3, p)
	var m welcome
	m.ClientID = string(d.bytes("client id", maxToken))
	m.Root = d.hash("root")
	switch d.byte1("retained flag") {
	case 0:
	case 1:
		m.Retained = true
	default:
		d.fail("retained flag")
	}
	m.Config = decodeConfig(d)
	m.Read = decodeScope(d)
	m.Write = decodeScope(d)
	m.RootNode = d.bytes("root node", node.MaxNodeSize)
	m.Hash = node.Alg(d.byte1("hash algorithm"))
	m.Caps = d.uvarint("capabilities")
	m.Root = readWideHash(d, m.Hash, m.Root, "root")
	d.rest() // fields of a later revision
	return m, d.done()
}

func appendConfig(b []byte, c chunker.Config) []byte {
	b = binary.AppendUvarint(b, uint64(c.LeafFanout))
	b = binary.AppendUvarint(b, uint64(c.BranchFanout))
	return binary.AppendUvarint(b, uint64(c.MaxBytes))
}

func decodeConfig(d *dec) chunker.Config {
	var c chunker.Config
	l, br, mx := d.uvarint("leaf fanout"), d.uvarint("branch fanout"), d.uvarint("max bytes")
	if l > 1<<32-1 || br > 1<<32-1 || mx > 1<<32-1 {
		d.fail("chunker config")
	}
	c.LeafFanout, c.BranchFanout, c.MaxBytes = uint32(l), uint32(br), uint32(mx)
	return c
}

type errorMsg struct {
	Code    uint64
	Message string
}

func (m errorMsg) encode() []byte {
	b := binary.AppendUvarint(nil, m.Code)
	return append(b, m.Message...)
}

func decodeError(p []byte) (errorMsg, error) {
	d := newDec(msgError, 0, p)
	var m errorMsg
	m.Code = d.uvarint("code")
	m.Message = string(d.rest())
	if len(m.Message) > 4096 {
		m.Message = m.Message[:4096]
	}
	return m, d.done()
}

// encodeHashes encodes a GetTree or GetBlobs request.
func encodeHashes(alg node.Alg, hs []node.Hash) []byte {
	b := binary.AppendUvarint(make([]byte, 0, 10+len(hs)*alg.Size()), uint64(len(hs)))
	for _, h := range hs {
		b = alg.Append(b, h)
	}
	return b
}

func decodeHashes(typ byte, alg node.Alg, p []byte, max int) ([]node.Hash, error) {
	d := newDec(typ, alg, p)
	n := d.uvarint("count")
	if d.err == nil && (n > uint64(max) || n*uint64(alg.Size()) != uint64(len(d.b))) {
		return nil, fmt.Errorf("%w: %s message: %d hashes in %d bytes (limit %d hashes)", ErrProtocol, msgName(typ), n, len(d.b), max)
	}
	hs := make([]node.Hash, n)
	for i := range hs {
		hs[i] = d.hash("hash")
	}
	return hs, d.done()
}

// pushChange is one local change: Key's value went from From (absent if
// !HasFrom) to Value (or was deleted).
type pushChange struct {
	Key     []byte
	HasFrom bool
	From    node.Hash // valueHash of the starting stored value
	Delete  bool
	Value   []byte
}

func (m pushChange) encode(alg node.Alg, dst []byte) []byte {
	dst = appendBytes(dst, m.Key)
	if m.HasFrom {
		dst = append(dst, 1)
		dst = alg.Append(dst, m.From)
	} else {
		dst = append(dst, 0)
	}
	if m.Delete {
		return append(dst, 0)
	}
	return appendBytes(append(dst, 1), m.Value)
}

func decodePushChange(alg node.Alg, p []byte) (pushChange, error) {
	d := newDec(msgPush, alg, p)
	var m pushChange
	m.Key = d.bytes("key", node.MaxKeySize)
	if d.err == nil && len(m.Key) == 0 {
		d.fail("key (empty)")
	}
	switch d.byte1("from flag") {
	case 0:
	case 1:
		m.HasFrom = true
		m.From = d.hash("from hash")
	default:
		d.fail("from flag")
	}
	switch d.byte1("op") {
	case 0:
		m.Delete = true
	case 1:
		m.Value = d.bytes("value", node.MaxValueSize)
	default:
		d.fail("op")
	}
	return m, d.done()
}

type pushDone struct {
	Root       node.Hash
	Accepted   uint64
	Overridden []uint64 // indexes, in push order, of changes the server's value overrode
	Rejected   []rejection
}

// rejection is a change the server's write validation refused; its index
// is also in Overridden.
type rejection struct {
	Index  uint64
	Reason string
}

// maxReason bounds a rejection reason on the wire.
const maxReason = 1024

func (m pushDone) encode(alg node.Alg) []byte {
	b := alg.Append(nil, m.Root)
	b = binary.AppendUvarint(b, m.Accepted)
	b = binary.AppendUvarint(b, uint64(len(m.Overridden)))
	for _, i := range m.Overridden {
		b = binary.AppendUvarint(b, i)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Rejected)))
	for _, r := range m.Rejected {
		b = binary.AppendUvarint(b, r.Index)
		b = appendBytes(b, []byte(truncateTo(r.Reason, maxReason)))
	}
	return b
}

func truncateTo(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func decodePushDone(alg node.Alg, p []byte) (pushDone, error) {
	d := newDec(msgPushDone, alg, p)
	var m pushDone
	m.Root = d.hash("root")
	m.Accepted = d.uvarint("accepted count")
	n := d.uvarint("overridden count")
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail("overridden count")
	}
	if d.err == nil {
		m.Overridden = make([]uint64, 0, n)
		for range n {
			m.Overridden = append(m.Overridden, d.uvarint("overridden index"))
		}
	}
	r := d.uvarint("rejected count")
	if d.err == nil && r > uint64(len(d.b)) {
		d.fail("rejected count")
	}
	if d.err == nil && r > 0 {
		m.Rejected = make([]rejection, 0, r)
		for range r {
			i := d.uvarint("rejected index")
			m.Rejected = append(m.Rejected, rejection{Index: i, Reason: string(d.bytes("rejection reason", maxReason))})
		}
	}
	return m, d.done()
}

type getChanges struct{ From, To node.Hash }

func (m getChanges) encode(alg node.Alg) []byte { return alg.Append(alg.Append(nil, m.From), m.To) }

func decodeGetChanges(alg node.Alg, p []byte) (getChanges, error) {
	d := newDec(msgGetChange, alg, p)
	var m getChanges
	m.From = d.hash("from root")
	m.To = d.hash("to root")
	return m, d.done()
}

// change is one record that differs: New is nil when the key was deleted.
type change struct {
	Key []byte
	New *node.Value
}

const (
	valDelete = 0
	valInline = 1
	valRef    = 2
)

func (m change) encode(dst []byte) []byte {
	dst = appendBytes(dst, m.Key)
	switch {
	case m.New == nil:
		return append(dst, valDelete)
	case m.New.IsRef:
		dst = append(dst, valRef)
		dst = m.New.Ref.Alg().Append(dst, m.New.Ref)
		return binary.AppendUvarint(dst, m.New.Size)
	default:
		dst = append(dst, valInline)
		return append(dst, m.New.Inline...)
	}
}

func decodeChange(alg node.Alg, p []byte) (change, error) {
	d := newDec(msgChange, alg, p)
	var m change
	m.Key = d.bytes("key", node.MaxKeySize)
	if d.err == nil && len(m.Key) == 0 {
		d.fail("key (empty)")
	}
	switch d.byte1("value kind") {
	case valDelete:
	case valInline:
		v := node.InlineValue(d.rest())
		if len(v.Inline) > node.MaxInlineValue {
			d.fail("inline value size")
		}
		m.New = &v
	case valRef:
		h := d.hash("value ref")
		if d.err == nil && h.IsZero() {
			d.fail("value ref (zero)")
		}
		size := d.uvarint("value size")
		if d.err == nil && (size <= node.MaxInlineValue || size > node.MaxValueSize) {
			d.fail("value size")
		}
		v := node.RefValue(h, size)
		m.New = &v
	default:
		d.fail("value kind")
	}
	return m, d.done()
}

func encodeEnd(n uint64) []byte { return binary.AppendUvarint(nil, n) }

func decodeEnd(p []byte) (uint64, error) {
	d := newDec(msgEnd, 0, p)
	n := d.uvarint("count")
	return n, d.done()
}

// valueHash identifies a stored value for compare-and-set: the hash of its
// leaf payload encoding under the store's hash. Equal stored values have
// equal hashes.
func valueHash(alg node.Alg, v node.Value) node.Hash { return alg.Sum(v.AppendPayload(nil)) }

// nodeReq is one node a walk asks for, with an optional hint: a node the
// client holds at the same level and key position (usually the old version
// of the node), against which the server may send a delta.
type nodeReq struct {
	Hash node.Hash
	Hint node.Hash // zero: no hint
}

func encodeNodeReqs(alg node.Alg, rs []nodeReq) []byte {
	b := binary.AppendUvarint(make([]byte, 0, 10+len(rs)*(2*alg.Size()+1)), uint64(len(rs)))
	for _, r := range rs {
		b = alg.Append(b, r.Hash)
		if r.Hint.IsZero() {
			b = append(b, 0)
		} else {
			b = append(b, 1)
			b = alg.Append(b, r.Hint)
		}
	}
	return b
}

func decodeNodeReqs(alg node.Alg, p []byte, max int) ([]nodeReq, error) {
	d := newDec(msgGetNodes, alg, p)
	n := d.uvarint("count")
	if d.err == nil && (n > uint64(max) || n*uint64(alg.Size()+1) > uint64(len(d.b))) {
		return nil, fmt.Errorf("%w: GetNodes message: %d requests in %d bytes (limit %d)", ErrProtocol, n, len(d.b), max)
	}
	rs := make([]nodeReq, n)
	for i := range rs {
		rs[i].Hash = d.hash("hash")
		switch d.byte1("hint flag") {
		case 0:
		case 1:
			rs[i].Hint = d.hash("hint")
		default:
			d.fail("hint flag")
		}
		if d.err != nil {
			break
		}
	}
	return rs, d.done()
}

// Node delta operations.
const (
	deltaCopy    = 0 // uvarint start, uvarint count: entries of the hint
	deltaLiteral = 1 // uvarint klen, key, uvarint plen, payload
)

// encodeNodeDelta describes target as runs of hint's entries and literal
// entries. It returns nil when the delta would not be smaller than target.
func encodeNodeDelta(target, hint *node.Node) []byte {
	if hint.Level() != target.Level() {
		return nil
	}
	b := binary.AppendUvarint(nil, uint64(target.Level()))
	b = binary.AppendUvarint(b, uint64(target.Len()))
	runStart, runLen := 0, 0
	flush := func() {
		if runLen > 0 {
			b = append(b, deltaCopy)
			b = binary.AppendUvarint(b, uint64(runStart))
			b = binary.AppendUvarint(b, uint64(runLen))
			runLen = 0
		}
	}
	j := 0
	for i := 0; i < target.Len(); i++ {
		k := target.Key(i)
		for j < hint.Len() && string(hint.Key(j)) < string(k) {
			j++
		}
		if j < hint.Len() && string(hint.Key(j)) == string(k) && string(hint.Payload(j)) == string(target.Payload(i)) {
			if runLen > 0 && runStart+runLen == j {
				runLen++
			} else {
				flush()
				runStart, runLen = j, 1
			}
			j++
			continue
		}
		flush()
		b = append(b, deltaLiteral)
		b = appendBytes(b, k)
		b = appendBytes(b, target.Payload(i))
		if len(b) >= len(target.Raw()) {
			return nil
		}
	}
	flush()
	if len(b) >= len(target.Raw()) {
		return nil
	}
	return b
}

// applyNodeDelta rebuilds a node's encoding from a delta and the hint it
// was made against. The caller verifies the result's hash.
func applyNodeDelta(p []byte, hint *node.Node) ([]byte, error) {
	d := newDec(msgNodeDelta, hint.Alg(), p)
	level := d.uvarint("level")
	n := d.uvarint("entry count")
	if d.err == nil && (level > node.MaxLevel || n > uint64(len(p))+uint64(hint.Len())*uint64(len(p))) {
		d.fail("header")
	}
	if d.err == nil && int(level) != hint.Level() {
		d.fail("level (differs from the hint's)")
	}
	var ents []node.Entry
	size := 0 // bytes of the rebuilt node's keys and payloads
	for d.err == nil && len(d.b) > 0 {
		switch d.byte1("op") {
		case deltaCopy:
			start, cnt := d.uvarint("copy start"), d.uvarint("copy count")
			if d.err == nil && (start > uint64(hint.Len()) || cnt > uint64(hint.Len())-start || cnt == 0) {
				d.fail("copy range")
			}
			for k := start; d.err == nil && k < start+cnt; k++ {
				e := hint.Entry(int(k))
				ents = append(ents, e)
				size += e.Size() + 2
			}
		case deltaLiteral:
			k := d.bytes("key", node.MaxKeySize)
			v := d.bytes("payload", node.MaxNodeSize)
			ents = append(ents, node.Entry{Key: k, Payload: v})
			size += len(k) + len(v) + 2
		default:
			d.fail("op")
		}
		// A lying delta must not make us build more than a node can hold.
		if uint64(len(ents)) > n || size > node.MaxNodeSize {
			d.fail("entry count or size")
		}
	}
	if d.err == nil && uint64(len(ents)) != n {
		d.fail("entry count")
	}
	if err := d.done(); err != nil {
		return nil, err
	}
	return node.Encode(hint.Alg(), int(level), ents), nil
}
