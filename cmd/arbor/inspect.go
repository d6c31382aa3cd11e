package main

import (
	"fmt"
	"strconv"

	"github.com/arbor-sync/arbor"
)

type diffCmd struct {
	Against string   `placeholder:"OTHER_DB" help:"Compare this store's head with OTHER_DB's head."`
	Roots   []string `arg:"" optional:"" placeholder:"ROOT" help:"Two root hashes in this store: FROM TO (instead of --against)."`
	rangeFlags
	JSON bool `name:"json" help:"Write one JSON object per change: {\"op\":…,\"key\":…,\"old\":…,\"new\":…}, with \"key_b64\", \"old_b64\", \"new_b64\" (base64) for bytes that are not UTF-8."`
}

func (diffCmd) Help() string {
	return "Lines are '+ KEY VALUE' (added), '- KEY OLD' (removed) and '~ KEY OLD -> NEW' (modified),\nfrom this store's point of view to the other's. --json writes one object per line.\n\nExample:\n  arbor --db replica diff --against primary\n  arbor --db data diff 3f2a…(32 hex) 9c41…(32 hex) --prefix user/"
}

func (c diffCmd) Run(e *env) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	opts := arbor.DiffOptions{Range: c.rng()}
	var changes func(yield func(arbor.Change, error) bool)
	switch {
	case c.Against != "" && len(c.Roots) == 0:
		other, err := arbor.Open(c.Against, &arbor.Options{MustExist: true})
		if err != nil {
			return err
		}
		defer other.Close()
		changes = db.DiffWith(e.ctx, other, opts)
	case c.Against == "" && len(c.Roots) == 2:
		from, err := arbor.ParseHash(c.Roots[0])
		if err != nil {
			return err
		}
		to, err := arbor.ParseHash(c.Roots[1])
		if err != nil {
			return err
		}
		changes = db.Diff(e.ctx, from, to, opts)
	default:
		return fmt.Errorf("diff: pass --against OTHER_DB, or two root hashes")
	}
	enc := newJSONEncoder(e.stdout)
	n := 0
	for ch, err := range changes {
		if err != nil {
			return fmt.Errorf("diff: %w", err)
		}
		n++
		if c.JSON {
			var out changeJSON
			out.Op = ch.Kind()
			out.Key, out.KeyB64 = textOrB64(ch.Key)
			if ch.Old != nil {
				out.Old, out.OldB64 = textOrB64(ch.Old)
			}
			if ch.New != nil {
				out.New, out.NewB64 = textOrB64(ch.New)
			}
			if err := enc.Encode(out); err != nil {
				return err
			}
			continue
		}
		switch ch.Kind() {
		case "added":
			fmt.Fprintf(e.stdout, "+ %s %s\n", quote(ch.Key), quote(ch.New))
		case "removed":
			fmt.Fprintf(e.stdout, "- %s %s\n", quote(ch.Key), quote(ch.Old))
		default:
			fmt.Fprintf(e.stdout, "~ %s %s -> %s\n", quote(ch.Key), quote(ch.Old), quote(ch.New))
		}
	}
	if !c.JSON {
		fmt.Fprintf(e.stderr, "%d change(s)\n", n)
	}
	return nil
}

// changeJSON is one line of 'diff --json'. "old" is absent for an added
// key and "new" for a removed one.
type changeJSON struct {
	Op     string  `json:"op"`
	Key    *string `json:"key,omitempty"`
	KeyB64 *string `json:"key_b64,omitempty"`
	Old    *string `json:"old,omitempty"`
	OldB64 *string `json:"old_b64,omitempty"`
	New    *string `json:"new,omitempty"`
	NewB64 *string `json:"new_b64,omitempty"`
}

// quote prints b bare when it is plain text and Go-quoted otherwise, and
// shortens long values.
func quote(b []byte) string {
	s := string(b)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	for _, r := range s {
		if r < 0x21 || r == 0x7f || r == '"' || r > 0x7e {
			return strconv.Quote(s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}

type statusCmd struct {
	JSON bool `name:"json" help:"Print as one JSON line."`
}

func (statusCmd) Help() string {
	return "On a partial replica, records counts the records in its scope, as 'arbor count' does.\n\n" +
		"Example:\n  arbor --db data status\n  arbor --db data status --json"
}

// statusJSON is 'arbor status --json'.
type statusJSON struct {
	Head         arbor.Hash `json:"head"`
	Base         arbor.Hash `json:"base"`
	Synced       bool       `json:"synced"`
	Records      uint64     `json:"records"`
	LocalChanges uint64     `json:"local_changes"`
	Scope        string     `json:"scope"`
	Hash         string     `json:"hash"`
}

func (c statusCmd) Run(e *env) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := db.Status(e.ctx)
	if err != nil {
		return err
	}
	// Status.Count is the root's subtree count. A partial replica's tree is
	// the server's pruned to its scope, so there that is the server's whole
	// count; count what is in scope instead, as 'arbor count' does.
	sc, err := db.Scope()
	if err != nil {
		return err
	}
	records := st.Count
	if !sc.IsAll() {
		if records, err = db.Count(e.ctx); err != nil {
			return err
		}
	}
	if c.JSON {
		return writeJSON(e.stdout, statusJSON{Head: st.Head, Base: st.Base, Synced: st.Synced, Records: records, LocalChanges: st.Local, Scope: sc.String(), Hash: db.Hash().String()})
	}
	base := st.Base.String()
	if !st.Synced {
		base += " (never synced)"
	}
	fmt.Fprintf(e.stdout, "head  %s\nbase  %s\nrecords %d\nlocal changes %d\nhash  %s\n", st.Head, base, records, st.Local, db.Hash())
	if !sc.IsAll() {
		fmt.Fprintf(e.stdout, "scope %s (partial replica)\n", sc)
	}
	return nil
}
