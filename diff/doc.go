// Package diff compares two prolly trees through node.Source and merges
// three of them with the server's value winning. Its cost grows with the
// size of the difference, not of the trees.
package diff
