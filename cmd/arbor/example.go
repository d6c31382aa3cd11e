package main

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
)

type exampleCmd struct {
	Records int    `default:"1000" placeholder:"N" help:"How many records."`
	Seed    uint64 `default:"1" help:"Seed of the generated values (the same seed gives the same dataset)."`
	JSON    bool   `name:"json" help:"Write JSON lines (for 'import --format jsonl') instead of KEY<TAB>VALUE."`
	// ValueSize pads values, for datasets of a given size (bench/huge.sh).
	ValueSize int `name:"value-size" placeholder:"BYTES" help:"Pad each value with letters to this many bytes (0: short text)."`
}

func (exampleCmd) Help() string {
	return "Keys are spread over the prefixes a/, b/, shared/ and user/ (a/000000, b/000001, …), so\n" +
		"the partial-replica examples in the README have records to select. Values are short text.\n\n" +
		"Example:\n  arbor example --records 1000 > records.tsv\n  arbor --db server-data import records.tsv"
}

// examplePrefixes are the example dataset's key prefixes, in turn.
var examplePrefixes = []string{"a/", "b/", "shared/", "user/"}

var exampleWords = []string{"amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "iris", "juniper", "kelp", "larch", "maple", "nectar", "oak", "pine"}

func (c exampleCmd) Run(e *env) error {
	if c.Records < 0 {
		return errors.New("example: --records must not be negative")
	}
	if c.ValueSize < 0 {
		return errors.New("example: --value-size must not be negative")
	}
	r := rand.New(rand.NewPCG(c.Seed, 7))
	w := bufio.NewWriterSize(e.stdout, 1<<16)
	enc := newJSONEncoder(w)
	// Keys of one width sort in the order they are written, whatever N.
	width := max(6, len(fmt.Sprint(max(c.Records-1, 0))))
	for i := range c.Records {
		key := fmt.Sprintf("%s%0*d", examplePrefixes[i%len(examplePrefixes)], width, i)
		value := fmt.Sprintf("%s %s %d", exampleWords[r.IntN(len(exampleWords))], exampleWords[r.IntN(len(exampleWords))], r.IntN(1_000_000))
		if pad := c.ValueSize - len(value); pad > 0 {
			b := []byte(value + " ")
			for len(b) < c.ValueSize {
				b = append(b, byte('a'+r.IntN(26)))
			}
			value = string(b[:c.ValueSize])
		}
		var err error
		if c.JSON {
			err = enc.Encode(newRecordJSON([]byte(key), []byte(value)))
		} else {
			_, err = fmt.Fprintf(w, "%s\t%s\n", key, value)
		}
		if err != nil {
			return err
		}
	}
	return w.Flush()
}
