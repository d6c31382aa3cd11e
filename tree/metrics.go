package tree

// PebbleStats are the Pebble figures an operator watches: how far
// compactions lag, how many sorted runs a read may visit, how well the
// block cache serves reads, and the write-ahead log and memtables.
type PebbleStats struct {
	CompactionDebtBytes uint64 // estimated bytes compactions must still rewrite
	ReadAmp             int    // L0 sublevels plus non-empty levels
	L0Files             int64
	Tables              int64 // live sstables in all levels
	BlockCacheBytes     int64
	BlockCacheHits      int64
	BlockCacheMisses    int64
	MemTableBytes       uint64
	WALBytes            uint64 // live WAL data
	WALBytesWritten     uint64 // since open
}

// PebbleStats returns a snapshot of Pebble's metrics for the store.
func (s *Store) PebbleStats() (PebbleStats, error) {
	done, err := s.use()
	if err != nil {
		return PebbleStats{}, err
	}
	defer done()
	m := s.db.Metrics()
	st := PebbleStats{
		CompactionDebtBytes: m.Compact.EstimatedDebt,
		ReadAmp:             m.ReadAmp(),
		L0Files:             m.Levels[0].TablesCount,
		BlockCacheBytes:     m.BlockCache.Size,
		BlockCacheHits:      m.BlockCache.Hits,
		BlockCacheMisses:    m.BlockCache.Misses,
		MemTableBytes:       m.MemTable.Size,
		WALBytes:            m.WAL.Size,
		WALBytesWritten:     m.WAL.BytesWritten,
	}
	for _, l := range m.Levels {
		st.Tables += l.TablesCount
	}
	return st, nil
}
