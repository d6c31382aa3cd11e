// Package scope describes the part of the keyspace a partial replica holds
// or a token may read or write: a union of key ranges.
//
// A Scope is normalised on construction: its ranges are sorted, non-empty
// and neither overlap nor touch, so two Scopes covering the same keys are
// equal field by field and membership is a binary search. The zero Scope is
// empty; All covers every key.
//
// Prefixes are ranges too: the prefix p is [p, PrefixEnd(p)). Scopes are
// written as comma-separated prefixes in token files ("read=a/,shared/")
// and as --prefix, --start and --end flags on the command line.
package scope
