package main

import "errors"

var errNotYet = errors.New("not available yet in this build")

type demoCmd struct{}

func (demoCmd) Run(e *env) error { return errNotYet }
