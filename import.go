package arbor

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// ImportFormat names an import line format.
type ImportFormat string

// Import formats.
const (
	// FormatTSV is one record per line: KEY, a tab, VALUE. Neither may
	// contain a tab or newline; a line without a tab is an error.
	FormatTSV ImportFormat = "tsv"
	// FormatJSONL is one JSON object per line, {"key": "...", "value": "..."},
	// with "key_b64"/"value_b64" (base64) for bytes that are not UTF-8
	// (RecordJSON).
	FormatJSONL ImportFormat = "jsonl"
)

// ImportOptions configure Import.
type ImportOptions struct {
	Format ImportFormat // default FormatTSV
	// Progress, if set, is called now and then with the records read and
	// the bytes consumed so far.
	Progress func(records, bytes int64)
}

// ImportStats reports what Import did.
type ImportStats struct {
	Records int64 // records read (later duplicates included)
	Root    Hash  // the new root
}

// Import sorts its input externally, so its memory does not grow with the
// input and an unsorted input costs one pass over the tree, not one per
// chunk:
//
//   - records are read into a chunk of importRunBytes; an input that fits
//     in one chunk is sorted and applied as it is;
//   - otherwise each full chunk is sorted, deduplicated (the later line
//     wins) and written to a run file in a temporary directory inside the
//     store (importDirPrefix; removed at the end, and by Open after a
//     crash), and the runs are merged in key order (on equal keys the
//     later run wins) and applied in pieces of importApplyBytes, each a
//     contiguous key range, to one batch that commits once.
//
// They are variables so that tests can make runs of a few records.
var (
	importRunBytes   = 64 << 20
	importApplyBytes = 16 << 20
)

const importReadBuffer = 64 << 10 // per run while merging

// importBeforeMerge, if set, is called with the run files before they are
// merged (tests damage them).
var importBeforeMerge func(runs []string)

// importDirPrefix names the temporary directories of Import's runs inside
// a store directory.
const importDirPrefix = "import-runs-"

// Import reads records from r and writes them in one atomic commit: if any
// line is malformed, Import returns an error naming the line (wrapping
// ErrBadInput) and the store is unchanged. Input need not be sorted; a
// later line for a key overrides an earlier one. Memory stays bounded
// whatever the input's size: an input larger than a chunk is sorted in
// run files inside the store directory, which need about the input's key
// and value bytes of free disk until Import returns.
func (db *DB) Import(ctx context.Context, r io.Reader, opts ImportOptions) (ImportStats, error) {
	var st ImportStats
	format := opts.Format
	if format == "" {
		format = FormatTSV
	}
	if format != FormatTSV && format != FormatJSONL {
		return st, fmt.Errorf("import: unknown format %q (want tsv or jsonl)", format)
	}
	within, err := db.Scope()
	if err != nil {
		return st, err
	}
	old, ok, err := db.store.Ref(HeadRef)
	if err != nil {
		return st, err
	}
	root := old
	if !ok {
		root = db.store.EmptyRoot()
	}
	b, err := db.store.NewBatch()
	if err != nil {
		return st, err
	}
	defer b.Discard()

	sorter := &importSorter{dir: db.Dir()}
	defer sorter.close()
	sc := bufio.NewScanner(r)
	// JSON escapes and base64 make a line longer than its record.
	sc.Buffer(make([]byte, 1<<20), 8*(node.MaxValueSize+node.MaxKeySize)+1024)
	var line int
	var consumed int64
	for sc.Scan() {
		line++
		text := sc.Bytes()
		consumed += int64(len(text)) + 1
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		key, value, err := parseLine(format, text)
		if err != nil {
			return st, fmt.Errorf("import: line %d: %w", line, err)
		}
		if len(key) == 0 || len(key) > node.MaxKeySize {
			return st, fmt.Errorf("import: line %d: %w: key of %d bytes (must be 1..%d)", line, ErrBadInput, len(key), node.MaxKeySize)
		}
		if len(value) > node.MaxValueSize {
			return st, fmt.Errorf("import: line %d: %w: value of %d bytes (at most %d)", line, ErrBadInput, len(value), node.MaxValueSize)
		}
		if err := within.Check(key); err != nil {
			return st, fmt.Errorf("import: line %d: %w", line, err) // as Put on a partial replica
		}
		if err := sorter.add(key, value); err != nil {
			return st, fmt.Errorf("import: %w", err)
		}
		st.Records++
		if opts.Progress != nil && st.Records%8192 == 0 {
			opts.Progress(st.Records, consumed)
		}
		if st.Records%65536 == 0 && ctx.Err() != nil {
			return st, ctx.Err()
		}
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("import: after line %d: %w", line, err)
	}
	if opts.Progress != nil {
		opts.Progress(st.Records, consumed)
	}
	err = sorter.sorted(ctx, func(edits []tree.Edit) error {
		root, err = b.Apply(ctx, root, edits)
		return err
	})
	if err != nil {
		return st, fmt.Errorf("import: %w", err)
	}
	b.ExpectRef(HeadRef, old, ok)
	b.SetRef(HeadRef, root)
	if err := b.Commit(ctx); err != nil {
		return st, fmt.Errorf("import: %w", err)
	}
	st.Root = root
	return st, nil
}

func parseLine(format ImportFormat, text []byte) (key, value []byte, err error) {
	if format == FormatJSONL {
		return ParseRecordJSON(text)
	}
	k, v, ok := bytes.Cut(text, []byte{'\t'})
	if !ok {
		return nil, nil, fmt.Errorf("%w: no tab between key and value", ErrBadInput)
	}
	return k, v, nil // slices of text: the sorter copies them
}

// importSorter turns records in input order into sorted edits, the later
// of two records for one key winning, in bounded memory.
type importSorter struct {
	dir    string   // the store directory, where the run directory goes
	runDir string   // "" until the first run is written
	runs   []string // run files, in input order
	counts []int    // records in each run, to tell a cut run from a whole one
	// The chunk's records sit end to end in one arena: one allocation per
	// record cost about as much again in allocator and GC work.
	arena []byte
	recs  []importRec
}

// importRec is one record of the arena: arena[off:keyEnd] is its key,
// arena[keyEnd:end] its value. A later record sits later in the arena.
type importRec struct{ off, keyEnd, end int }

// importRecSize is what a record costs beside its bytes; a chunk of small
// records is bounded by it as much as by their bytes.
const importRecSize = int(unsafe.Sizeof(importRec{}))

func (s *importSorter) add(key, value []byte) error {
	off := len(s.arena)
	s.arena = append(s.arena, key...)
	s.arena = append(s.arena, value...)
	s.recs = append(s.recs, importRec{off, off + len(key), len(s.arena)})
	if len(s.arena)+len(s.recs)*importRecSize >= importRunBytes {
		return s.spill()
	}
	return nil
}

// sortChunk sorts the chunk by key and drops all but the last record of
// each key.
func (s *importSorter) sortChunk() {
	a := s.arena
	slices.SortFunc(s.recs, func(x, y importRec) int {
		if c := bytes.Compare(a[x.off:x.keyEnd], a[y.off:y.keyEnd]); c != 0 {
			return c
		}
		return cmp.Compare(x.off, y.off)
	})
	out := s.recs[:0]
	for i, r := range s.recs {
		if i+1 < len(s.recs) && bytes.Equal(a[r.off:r.keyEnd], a[s.recs[i+1].off:s.recs[i+1].keyEnd]) {
			continue
		}
		out = append(out, r)
	}
	s.recs = out
}

// spill writes the chunk as a sorted run: per record, uvarint key length,
// key, uvarint value length, value.
func (s *importSorter) spill() error {
	if s.runDir == "" {
		d, err := os.MkdirTemp(s.dir, importDirPrefix)
		if err != nil {
			return fmt.Errorf("sorting the input: %w", err)
		}
		s.runDir = d
	}
	s.sortChunk()
	name := filepath.Join(s.runDir, fmt.Sprintf("run-%06d", len(s.runs)))
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("sorting the input: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var hdr [binary.MaxVarintLen64]byte
	for _, r := range s.recs {
		w.Write(binary.AppendUvarint(hdr[:0], uint64(r.keyEnd-r.off)))
		w.Write(s.arena[r.off:r.keyEnd])
		w.Write(binary.AppendUvarint(hdr[:0], uint64(r.end-r.keyEnd)))
		w.Write(s.arena[r.keyEnd:r.end])
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sorting the input: write %s: %w", name, err)
	}
	s.runs, s.counts = append(s.runs, name), append(s.counts, len(s.recs))
	// Nothing keeps slices of a spilled chunk, so its memory serves the
	// next one, unless one huge value grew it well past a chunk.
	s.arena, s.recs = s.arena[:0], s.recs[:0]
	if cap(s.arena) > 2*importRunBytes {
		s.arena = nil
	}
	return nil
}

// sorted calls apply with every record as sorted edits, in pieces of
// about importApplyBytes, each covering keys after the last's. apply
// may keep the slices it is given.
func (s *importSorter) sorted(ctx context.Context, apply func([]tree.Edit) error) error {
	if len(s.runs) == 0 {
		s.sortChunk()
		var edits []tree.Edit
		bytes := 0
		for _, r := range s.recs {
			edits = append(edits, tree.Edit{Key: s.arena[r.off:r.keyEnd:r.keyEnd], Value: s.arena[r.keyEnd:r.end:r.end]})
			if bytes += r.end - r.off; bytes >= importApplyBytes {
				if err := apply(edits); err != nil {
					return err
				}
				edits, bytes = nil, 0
			}
		}
		s.arena, s.recs = nil, nil
		if len(edits) == 0 {
			return nil
		}
		return apply(edits)
	}
	if len(s.recs) > 0 {
		if err := s.spill(); err != nil {
			return err
		}
	}
	s.arena, s.recs = nil, nil
	if importBeforeMerge != nil {
		importBeforeMerge(s.runs)
	}
	m, err := newRunMerger(s.runs, s.counts)
	if err != nil {
		return err
	}
	defer m.close()
	var (
		piece []byte // keys and values of the edits, end to end
		edits []tree.Edit
		spans [][4]int // offsets of each edit's key and value in piece
	)
	flush := func() error {
		for i, sp := range spans {
			edits[i] = tree.Edit{Key: piece[sp[0]:sp[1]:sp[1]], Value: piece[sp[2]:sp[3]:sp[3]]}
		}
		err := apply(edits)
		// apply may keep slices of piece: the next piece is new (and no
		// larger than a piece needs, whatever value the last one held).
		piece, edits, spans = make([]byte, 0, min(cap(piece), importApplyBytes+importApplyBytes/4)), nil, spans[:0]
		return err
	}
	for {
		key, value, ok := m.peek()
		if !ok {
			break
		}
		k := len(piece)
		piece = append(piece, key...)
		piece = append(piece, value...)
		spans = append(spans, [4]int{k, k + len(key), k + len(key), len(piece)})
		edits = append(edits, tree.Edit{})
		if err := m.skip(); err != nil {
			return err
		}
		if len(piece) >= importApplyBytes {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if len(edits) == 0 {
		return nil
	}
	return flush()
}

// close removes the run files.
func (s *importSorter) close() {
	if s.runDir != "" {
		os.RemoveAll(s.runDir)
	}
}

// removeImportRuns removes the run directories an import left behind when
// its process died; the caller holds the store's lock, so none is in use.
func removeImportRuns(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), importDirPrefix) {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// runMerger merges sorted runs; of equal keys, the later run's wins.
type runMerger struct {
	heap []*runCursor // a min-heap by (key, later run first)
	all  []*runCursor
	last []byte // the key skip moves past
}

type runCursor struct {
	f          *os.File
	r          *bufio.Reader
	name       string
	run        int
	left       int // records not yet read
	key, value []byte
}

func newRunMerger(names []string, counts []int) (*runMerger, error) {
	m := &runMerger{}
	for i, name := range names {
		f, err := os.Open(name)
		if err != nil {
			m.close()
			return nil, fmt.Errorf("sorting the input: %w", err)
		}
		c := &runCursor{f: f, r: bufio.NewReaderSize(f, importReadBuffer), name: name, run: i, left: counts[i]}
		m.all = append(m.all, c)
		ok, err := c.advance()
		if err != nil {
			m.close()
			return nil, err
		}
		if ok {
			m.heap = append(m.heap, c)
		}
	}
	for i := len(m.heap)/2 - 1; i >= 0; i-- {
		m.down(i)
	}
	return m, nil
}

// errBadRun reports a run file that is not what Import wrote (a disk
// fault, or someone else's write).
var errBadRun = errors.New("damaged sort run")

// advance reads the cursor's next record; false at the end of its run. A
// run that ends early, runs on, or holds a length no record can have is
// an error: its records would be lost or made up.
func (c *runCursor) advance() (bool, error) {
	kl, err := binary.ReadUvarint(c.r)
	if err == io.EOF {
		if c.left != 0 {
			return false, fmt.Errorf("sorting the input: read %s: %w: it ends %d records early", c.name, errBadRun, c.left)
		}
		return false, nil
	}
	if err == nil && c.left == 0 {
		err = fmt.Errorf("%w: more records than were written", errBadRun)
	}
	if err == nil && (kl == 0 || kl > node.MaxKeySize) {
		err = fmt.Errorf("%w: a key of %d bytes", errBadRun, kl)
	}
	if err == nil {
		c.key = reuse(c.key, int(kl))
		_, err = io.ReadFull(c.r, c.key)
	}
	var vl uint64
	if err == nil {
		vl, err = binary.ReadUvarint(c.r)
	}
	if err == nil && vl > node.MaxValueSize {
		err = fmt.Errorf("%w: a value of %d bytes", errBadRun, vl)
	}
	if err == nil {
		c.value = reuse(c.value, int(vl))
		_, err = io.ReadFull(c.r, c.value)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return false, fmt.Errorf("sorting the input: read %s: %w", c.name, err)
	}
	c.left--
	return true, nil
}

// reuse returns buf resized to n bytes, reusing its memory unless that is
// far more than n needs (a huge value read once is not kept for the rest
// of the merge).
func reuse(buf []byte, n int) []byte {
	if cap(buf) >= n && cap(buf) <= max(4*n, 64<<10) {
		return buf[:n]
	}
	return make([]byte, n)
}

func (m *runMerger) less(a, b *runCursor) bool {
	if c := bytes.Compare(a.key, b.key); c != 0 {
		return c < 0
	}
	return a.run > b.run
}

func (m *runMerger) down(i int) {
	h := m.heap
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		j := l
		if r := l + 1; r < len(h) && m.less(h[r], h[l]) {
			j = r
		}
		if !m.less(h[j], h[i]) {
			return
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}

// peek returns the smallest key left and the latest run's value for it;
// the slices are valid until skip.
func (m *runMerger) peek() (key, value []byte, ok bool) {
	if len(m.heap) == 0 {
		return nil, nil, false
	}
	return m.heap[0].key, m.heap[0].value, true
}

// skip moves past every record with the key peek returned.
func (m *runMerger) skip() error {
	m.last = append(m.last[:0], m.heap[0].key...)
	for len(m.heap) > 0 && bytes.Equal(m.heap[0].key, m.last) {
		more, err := m.heap[0].advance()
		if err != nil {
			return err
		}
		if !more {
			last := len(m.heap) - 1
			m.heap[0] = m.heap[last]
			m.heap = m.heap[:last]
		}
		if len(m.heap) > 0 {
			m.down(0)
		}
	}
	return nil
}

func (m *runMerger) close() {
	for _, c := range m.all {
		c.f.Close()
	}
}
