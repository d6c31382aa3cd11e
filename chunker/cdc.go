package chunker

// Content-defined chunking of large values: a gear rolling hash in the style
// of FastCDC (Xia et al., 2016) with normalized chunking. The cut points
// depend only on the bytes, so equal content gives equal chunks and a local
// edit changes only the chunks around it.
const (
	// MinChunk, AvgChunk and MaxChunk bound value chunk sizes in bytes.
	MinChunk = 4 << 10
	AvgChunk = 16 << 10
	MaxChunk = 64 << 10

	// Normalized chunking: a stricter mask before AvgChunk and a looser one
	// after narrows the size distribution around AvgChunk.
	// The tests read the hash's top bits, which depend on the last 64 bytes
	// (each step shifts left), so the rolling window is 64 bytes.
	strictShift = 64 - 16 // 16 bits must be zero: harder to cut before the average
	looseShift  = 64 - 12 // 12 bits must be zero: easier to cut after it
)

// gear maps bytes to pseudo-random 64-bit words. It is generated from a fixed
// seed with splitmix64 and is part of the format.
var gear = func() (t [256]uint64) {
	x := uint64(0x41524230525f4344) // "ARB0R_CD"
	for i := range t {
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		t[i] = z ^ (z >> 31)
	}
	return t
}()

// SplitValue returns the lengths of the content-defined chunks of v, in
// order; they sum to len(v). An empty v has no chunks.
func SplitValue(v []byte) []int {
	var sizes []int
	for len(v) > 0 {
		n := cut(v)
		sizes = append(sizes, n)
		v = v[n:]
	}
	return sizes
}

// cut returns the length of the first chunk of v.
func cut(v []byte) int {
	if len(v) <= MinChunk {
		return len(v)
	}
	end := len(v)
	if end > MaxChunk {
		end = MaxChunk
	}
	normal := AvgChunk
	if normal > end {
		normal = end
	}
	var h uint64
	i := MinChunk
	for ; i < normal; i++ {
		h = (h << 1) + gear[v[i]]
		if h>>strictShift == 0 {
			return i + 1
		}
	}
	for ; i < end; i++ {
		h = (h << 1) + gear[v[i]]
		if h>>looseShift == 0 {
			return i + 1
		}
	}
	return end
}
