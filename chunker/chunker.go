package chunker

import (
	"errors"
	"fmt"
	"math"

	"github.com/arbor-sync/arbor/node"
	"github.com/zeebo/xxh3"
)

// Defaults for Config's zero fields. With 16-byte keys and 100-byte values a
// leaf of 32 entries and a branch of 128 entries are each about 4 KiB.
const (
	DefaultLeafFanout   = 32
	DefaultBranchFanout = 128
	DefaultMaxBytes     = 64 << 10
	// MaxEntriesFactor sets the entry cap: a node holds at most
	// MaxEntriesFactor × fanout entries. For geometric run lengths the cap
	// binds on about e^-8 ≈ 0.03% of nodes.
	MaxEntriesFactor = 8
)

// Config sets the target node size of a tree, in entries per node. It is
// part of a store's identity: trees built with different Configs have
// different hashes for the same records.
type Config struct {
	// LeafFanout is the mean number of records per leaf. Zero means
	// DefaultLeafFanout.
	LeafFanout uint32 `json:"leaf_fanout"`
	// BranchFanout is the mean number of children per branch. Zero means
	// DefaultBranchFanout.
	BranchFanout uint32 `json:"branch_fanout"`
	// MaxBytes caps the key and payload bytes of one node. Zero means
	// DefaultMaxBytes.
	MaxBytes uint32 `json:"max_bytes"`
}

// ErrBadConfig reports a Config outside the supported bounds.
var ErrBadConfig = errors.New("chunker: bad config")

// WithDefaults returns c with zero fields replaced by their defaults.
func (c Config) WithDefaults() Config {
	if c.LeafFanout == 0 {
		c.LeafFanout = DefaultLeafFanout
	}
	if c.BranchFanout == 0 {
		c.BranchFanout = DefaultBranchFanout
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	return c
}

// Validate reports whether c (after defaults) is usable.
func (c Config) Validate() error {
	c = c.WithDefaults()
	if c.LeafFanout < 2 || c.LeafFanout > 1<<16 || c.BranchFanout < 2 || c.BranchFanout > 1<<16 {
		return fmt.Errorf("%w: fanouts must be in [2, 65536], got leaf %d branch %d", ErrBadConfig, c.LeafFanout, c.BranchFanout)
	}
	// A node must be able to hold at least one maximal entry plus another.
	if c.MaxBytes < 2*(node.MaxKeySize+node.MaxInlineValue+32) || c.MaxBytes > node.MaxNodeSize/2 {
		return fmt.Errorf("%w: max bytes %d outside [%d, %d]", ErrBadConfig, c.MaxBytes, 2*(node.MaxKeySize+node.MaxInlineValue+32), node.MaxNodeSize/2)
	}
	return nil
}

// levelSeed salts the key hash per level, so that a key which ends a leaf
// is not more likely to also end its parent.
func levelSeed(level int) uint64 {
	return 0x9E3779B97F4A7C15 * uint64(level+1)
}

// Splitter decides, entry by entry, where the nodes of one level end. The
// zero Splitter is not usable; create one with NewSplitter. A Splitter is
// not safe for concurrent use.
type Splitter struct {
	seed       uint64
	threshold  uint64
	maxEntries int
	maxBytes   int
	n, bytes   int
}

// NewSplitter returns a Splitter for nodes at level, starting just after a
// boundary.
func NewSplitter(c Config, level int) *Splitter {
	c = c.WithDefaults()
	fan := c.LeafFanout
	if level > 0 {
		fan = c.BranchFanout
	}
	return &Splitter{
		seed:       levelSeed(level),
		threshold:  math.MaxUint64 / uint64(fan),
		maxEntries: int(fan) * MaxEntriesFactor,
		maxBytes:   int(c.MaxBytes),
	}
}

// IsBoundaryKey reports whether key ends a node at this level by the hash
// rule alone (ignoring caps).
func (s *Splitter) IsBoundaryKey(key []byte) bool {
	return xxh3.HashSeed(key, s.seed) < s.threshold
}

// Next feeds the next entry of the level and reports whether a node ends
// after it. After a true result the Splitter is at a boundary again.
func (s *Splitter) Next(e node.Entry) bool {
	s.n++
	s.bytes += e.Size()
	if s.IsBoundaryKey(e.Key) || s.n >= s.maxEntries || s.bytes >= s.maxBytes {
		s.Reset()
		return true
	}
	return false
}

// AtBoundary reports whether no entry has been fed since the last boundary.
func (s *Splitter) AtBoundary() bool { return s.n == 0 }

// Reset puts the Splitter at a boundary.
func (s *Splitter) Reset() { s.n, s.bytes = 0, 0 }
