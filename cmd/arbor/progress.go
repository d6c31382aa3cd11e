package main

import (
	"io"
	"sync"

	"github.com/schollz/progressbar/v3"
)

// spinner shows desc with a spinner and the time elapsed on standard
// error, when it is a terminal, until the returned func is called. It is
// for work whose library call reports no progress (verify, gc, the commit
// of an import, settling): an honest "still working, for this long"
// rather than a made-up percentage.
func (e *env) spinner(desc string) (stop func()) {
	if !e.isTTY {
		return func() {}
	}
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(e.stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionClearOnFinish(),
	)
	bar.RenderBlank() // starts the clock; the bar redraws itself every 100ms
	var once sync.Once
	return func() { once.Do(func() { bar.Finish() }) }
}

// eofReader calls onEOF once, from the reading goroutine, when r first
// returns io.EOF: for an import, the moment reading ends and the commit
// begins.
type eofReader struct {
	r     io.Reader
	onEOF func()
	done  bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF && !e.done {
		e.done = true
		e.onEOF()
	}
	return n, err
}

// timed runs fn with a spinner showing desc; see spinner.
func (e *env) timed(desc string, fn func() error) error {
	stop := e.spinner(desc)
	defer stop()
	return fn()
}
