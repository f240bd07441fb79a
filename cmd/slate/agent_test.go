package main

import "testing"

// update.insecure allows plain HTTP to the registry the node config names,
// and to no other.
func TestSameRegistry(t *testing.T) {
	for _, c := range []struct {
		ref, source string
		want        bool
	}{
		{"10.0.2.2:5000/slate/node:v2", "10.0.2.2:5000/slate/node", true},
		{"10.0.2.2:5000/other/repo@sha256:" + "ab" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd", "10.0.2.2:5000/slate/node:v1", true},
		{"10.0.2.2:5001/slate/node:v2", "10.0.2.2:5000/slate/node", false},
		{"registry.example/org/node:2", "10.0.2.2:5000/slate/node", false},
		{"oci:/media/usb/node", "10.0.2.2:5000/slate/node", false},
		{"10.0.2.2:5000/slate/node:v2", "", false},
	} {
		if got := sameRegistry(c.ref, c.source); got != c.want {
			t.Errorf("sameRegistry(%q, %q) = %v, want %v", c.ref, c.source, got, c.want)
		}
	}
}
