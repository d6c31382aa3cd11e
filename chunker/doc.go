// Package chunker decides where Arbor's nodes and large values are cut.
//
// Node boundaries (Splitter). A node ends after an entry when the xxh3 hash
// of the entry's key, seeded per level, falls below 2^64/fanout. The decision
// reads only the key and the level, never the value or the history of
// writes, so the same set of records always yields the same nodes and the
// same root hash (history independence), and changing a value never moves a
// boundary. Two deterministic caps bound node size against unlucky or
// crafted keys: a node also ends once it holds MaxEntries entries or
// MaxBytes bytes. The caps depend on the run of entries since the previous
// boundary, which is still a pure function of the record set; their only
// cost is that an edit inside a capped run may shift the forced boundaries up
// to the run's next key-decided boundary.
//
// Value chunks (SplitValue). A value larger than node.MaxInlineValue is cut
// into content-defined chunks with a gear rolling hash (FastCDC style), so
// that an edit inside a large value changes only the chunks around it.
//
// Both rules are part of the on-disk format: changing a constant here changes
// every hash. Config is recorded in a store's metadata, and stores with
// different Configs refuse to compare.
package chunker
