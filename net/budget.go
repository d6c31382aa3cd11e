package net

import (
	"fmt"
	"sync/atomic"
)

// memBudget bounds bytes held on behalf of peers: a session's budget and
// the server's global one. take fails at once instead of waiting, so a
// peer that hoards memory gets an error rather than stalling others, and no
// two holders can deadlock waiting for each other's bytes.
type memBudget struct {
	name   string
	limit  int64
	used   atomic.Int64
	parent *memBudget // taken from as well (the server's global budget)
}

// take reserves n bytes, from the parent too; on failure nothing is held.
func (b *memBudget) take(n int64) error {
	if b == nil || n <= 0 {
		return nil
	}
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return fmt.Errorf("%w: %s memory budget of %d bytes exhausted", errLimit, b.name, b.limit)
	}
	if err := b.parent.take(n); err != nil {
		b.used.Add(-n)
		return err
	}
	return nil
}

// give returns n bytes taken earlier.
func (b *memBudget) give(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.used.Add(-n)
	b.parent.give(n)
}
