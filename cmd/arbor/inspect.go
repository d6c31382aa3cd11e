package main

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/arbor-sync/arbor"
)

type diffCmd struct {
	Against string   `placeholder:"OTHER_DB" help:"Compare this store's head with OTHER_DB's head."`
	Roots   []string `arg:"" optional:"" placeholder:"ROOT" help:"Two root hashes in this store: FROM TO (instead of --against)."`
	rangeFlags
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
	enc := json.NewEncoder(e.stdout)
	n := 0
	for ch, err := range changes {
		if err != nil {
			return fmt.Errorf("diff: %w", err)
		}
		n++
		if c.JSON {
			out := struct {
				Op  string  `json:"op"`
				Key string  `json:"key"`
				Old *string `json:"old,omitempty"`
				New *string `json:"new,omitempty"`
			}{Op: ch.Kind(), Key: string(ch.Key)}
			if ch.Old != nil {
				s := string(ch.Old)
				out.Old = &s
			}
			if ch.New != nil {
				s := string(ch.New)
				out.New = &s
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
	JSON bool `name:"json" help:"Print as JSON."`
}

func (statusCmd) Help() string {
	return "Example:\n  arbor --db data status"
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
	if c.JSON {
		return json.NewEncoder(e.stdout).Encode(st)
	}
	base := st.Base.String()
	if !st.Synced {
		base += " (never synced)"
	}
	fmt.Fprintf(e.stdout, "head  %s\nbase  %s\nrecords %d\nlocal changes %d\n", st.Head, base, st.Count, st.Local)
	return nil
}
