package main

import "errors"

var errNotYet = errors.New("not available yet in this build")

type serveCmd struct{}

func (serveCmd) Run(e *env) error { return errNotYet }

type syncCmd struct{}

func (syncCmd) Run(e *env) error { return errNotYet }

type demoCmd struct{}

func (demoCmd) Run(e *env) error { return errNotYet }
