package main

import (
	"slices"
	"testing"
)

// The node's side of slate sysext: the units run activate and fetch.
func TestSysextNodeCommands(t *testing.T) {
	var names []string
	for _, c := range sysextNodeCommands() {
		names = append(names, c.Name())
		if err := c.Args(c, []string{"extra"}); err == nil {
			t.Errorf("slate sysext %s takes arguments", c.Name())
		}
	}
	if !slices.Equal(names, []string{"activate", "fetch", "status"}) {
		t.Errorf("commands %q", names)
	}
	var sub []string
	for _, c := range sysextCmd().Commands() {
		sub = append(sub, c.Name())
	}
	for _, n := range []string{"activate", "fetch", "status"} {
		if !slices.Contains(sub, n) {
			t.Errorf("slate sysext has no %s: %q", n, sub)
		}
	}
}
