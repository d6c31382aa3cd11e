package net

import (
	"encoding/binary"
	"fmt"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
)

// Hello flags.
const (
	flagAudit = 1 << 0 // the client only wants the server's root
	flagPush  = 1 << 1 // the client has local changes and will push first
	flagWalk  = 1 << 2 // the client will walk whatever its base (it distrusts it)
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
)

// maxToken bounds a token's length on the wire.
const maxToken = 1024

type hello struct {
	Token  string
	Base   node.Hash // zero: the client has no base
	Flags  byte
	Config chunker.Config
}

func (m hello) encode() []byte {
	b := appendBytes(nil, []byte(m.Token))
	b = append(b, m.Base[:]...)
	b = append(b, m.Flags)
	return appendConfig(b, m.Config)
}

func decodeHello(p []byte) (hello, error) {
	d := newDec(msgHello, p)
	var m hello
	m.Token = string(d.bytes("token", maxToken))
	m.Base = d.hash("base root")
	m.Flags = d.byte1("flags")
	m.Config = decodeConfig(d)
	return m, d.done()
}

type welcome struct {
	ClientID string
	Root     node.Hash
	Retained bool // the client's base is retained: the changes path is open
	Config   chunker.Config
	RootNode []byte // the root node's bytes when the client will need to walk; may be empty
}

func (m welcome) encode() []byte {
	b := appendBytes(nil, []byte(m.ClientID))
	b = append(b, m.Root[:]...)
	r := byte(0)
	if m.Retained {
		r = 1
	}
	b = append(b, r)
	b = appendConfig(b, m.Config)
	return append(b, m.RootNode...)
}

func decodeWelcome(p []byte) (welcome, error) {
	d := newDec(msgWelcome, p)
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
	m.RootNode = d.rest()
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
	d := newDec(msgError, p)
	var m errorMsg
	m.Code = d.uvarint("code")
	m.Message = string(d.rest())
	if len(m.Message) > 4096 {
		m.Message = m.Message[:4096]
	}
	return m, d.done()
}

// encodeHashes encodes a GetNodes or GetBlobs request.
func encodeHashes(hs []node.Hash) []byte {
	b := binary.AppendUvarint(make([]byte, 0, 10+len(hs)*node.HashSize), uint64(len(hs)))
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	return b
}

func decodeHashes(typ byte, p []byte, max int) ([]node.Hash, error) {
	d := newDec(typ, p)
	n := d.uvarint("count")
	if d.err == nil && (n > uint64(max) || n*node.HashSize != uint64(len(d.b))) {
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

func (m pushChange) encode(dst []byte) []byte {
	dst = appendBytes(dst, m.Key)
	if m.HasFrom {
		dst = append(dst, 1)
		dst = append(dst, m.From[:]...)
	} else {
		dst = append(dst, 0)
	}
	if m.Delete {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	return append(dst, m.Value...)
}

func decodePushChange(p []byte) (pushChange, error) {
	d := newDec(msgPush, p)
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
		m.Value = d.rest()
		if len(m.Value) > node.MaxValueSize {
			d.fail("value size")
		}
	default:
		d.fail("op")
	}
	return m, d.done()
}

type pushDone struct {
	Root       node.Hash
	Accepted   uint64
	Overridden []uint64 // indexes, in push order, of changes the server's value overrode
}

func (m pushDone) encode() []byte {
	b := append([]byte(nil), m.Root[:]...)
	b = binary.AppendUvarint(b, m.Accepted)
	b = binary.AppendUvarint(b, uint64(len(m.Overridden)))
	for _, i := range m.Overridden {
		b = binary.AppendUvarint(b, i)
	}
	return b
}

func decodePushDone(p []byte) (pushDone, error) {
	d := newDec(msgPushDone, p)
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
	return m, d.done()
}

type getChanges struct{ From, To node.Hash }

func (m getChanges) encode() []byte { return append(append([]byte(nil), m.From[:]...), m.To[:]...) }

func decodeGetChanges(p []byte) (getChanges, error) {
	d := newDec(msgGetChange, p)
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
		dst = append(dst, m.New.Ref[:]...)
		return binary.AppendUvarint(dst, m.New.Size)
	default:
		dst = append(dst, valInline)
		return append(dst, m.New.Inline...)
	}
}

func decodeChange(p []byte) (change, error) {
	d := newDec(msgChange, p)
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
	d := newDec(msgEnd, p)
	n := d.uvarint("count")
	return n, d.done()
}

// valueHash identifies a stored value for compare-and-set: the hash of its
// leaf payload encoding. Equal stored values have equal hashes.
func valueHash(v node.Value) node.Hash { return node.Sum(v.AppendPayload(nil)) }
