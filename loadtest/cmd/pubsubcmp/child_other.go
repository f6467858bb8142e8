//go:build !linux

package main

import "os/exec"

// childOfUs: only Linux can have a child killed when its parent dies; elsewhere the
// deferred stops are all there is.
func childOfUs(*exec.Cmd) {}
