package diff

import "github.com/arbor-sync/arbor/tree"

// Edits returns the stored edits that apply changes to a tree holding
// their old values: set each key to New, or delete it when New is nil.
// The result aliases the changes' keys and values. Apply it with
// tree.Batch.ApplyValues; an out-of-line New value's blobs must already be
// in (or be copied into) the target store for its records to be readable.
func Edits(changes []Change) []tree.StoredEdit {
	out := make([]tree.StoredEdit, len(changes))
	for i, c := range changes {
		out[i] = tree.StoredEdit{Key: c.Key, Value: c.New}
	}
	return out
}
