package tree

// BulkLoad makes the batch a bulk load, for filling a store that holds
// little yet (such as a replica's initial clone): it then writes its nodes
// and blobs as sorted sstables that Pebble ingests in the background, one
// per ingestSpillBytes, instead of through Pebble's write-ahead log and
// memtable (as a Builder's batch does), and it does not add them to the
// node cache when it commits. Call it before adding anything. As with any
// spill, nodes ingested before Commit are unreferenced until the commit
// moves a ref to them, so a crash leaves only garbage; spills are ingested
// in order, one at a time, and Commit waits for the last before writing the
// rest with the batch's refs and metadata. The batch keeps no reference to
// the nodes it has written out, so nodes put into it cannot be read back
// through it (by Apply or a Builder on the same batch) before Commit.
func (b *Batch) BulkLoad() {
	b.ingest = true
	b.bulk = true
	b.load = true
}
