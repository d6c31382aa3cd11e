//go:build !cgo

package main

// pebbleInGoHeap reports whether Pebble's block cache and memtables are Go
// memory: without cgo Pebble allocates them with make, with cgo in C.
const pebbleInGoHeap = true
