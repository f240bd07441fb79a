package rootfs

import (
	"archive/tar"
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slate-os/slate/internal/testimage"
)

// TestVarUsage: what lands under var/ is counted as the first boot's copy
// will lay it out; nothing else is, and a hard-linked file counts once.
func TestVarUsage(t *testing.T) {
	type ent struct {
		name string
		typ  byte
		size int64
		link string
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []ent{
		{name: "./var/", typ: tar.TypeDir},                                            // the state filesystem's root: not counted
		{name: "./var/lib/", typ: tar.TypeDir},                                        // 1 inode, 1 block
		{name: "/var/lib/a", size: 1},                                                 // "/" prefix: 1 block
		{name: "var/lib/b", size: 4096},                                               // 1 block
		{name: "var/lib/c", size: 4097},                                               // 2 blocks
		{name: "var/lib/empty", size: 0},                                              // an inode, no block
		{name: "var/lib/a-again", typ: tar.TypeLink, link: "var/lib/a"},               // same inode
		{name: "var/lib/a-third", typ: tar.TypeLink, link: "./var/lib/a"},             // same inode
		{name: "usr/lib/outside", size: 10000},                                        // not /var
		{name: "var/lib/from-usr", typ: tar.TypeLink, link: "usr/lib/outside"},        // a file of its own in the copy: 3 blocks
		{name: "var/lib/from-usr2", typ: tar.TypeLink, link: "usr/lib/outside"},       // and only once
		{name: "var/run", typ: tar.TypeSymlink, link: "/run"},                         // 1 inode, in-inode target
		{name: "var/long", typ: tar.TypeSymlink, link: "/" + strings.Repeat("x", 80)}, // 1 inode, 1 block
		{name: "var/fifo", typ: tar.TypeFifo},                                         // 1 inode
		{name: "variant/x", size: 5000},                                               // not /var
		{name: "usr/var/x", size: 5000},                                               // not /var
		{name: "etc/x", typ: tar.TypeLink, link: "var/lib/b"},                         // outside /var
	} {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Size: e.size, Linkname: e.link, Mode: 0o644}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write(make([]byte, e.size))
		}
	}
	tw.Close()

	s := &scanner{opt: Options{WorkDir: t.TempDir()}, kernels: map[string]string{}, configs: map[string][]byte{}, deps: map[string][]byte{}, builtin: map[string][]byte{}}
	if err := s.scan(&buf, tar.NewWriter(io.Discard)); err != nil {
		t.Fatal(err)
	}
	want := VarUsage{
		Size:   1 + 4096 + 4097 + 0 + 10000,
		Blocks: 4096 * (1 + 1 + 1 + 2 + 0 + 3 + 1),
		Files:  5,
		Inodes: 1 + 5 + 2 + 1,
	}
	if s.vars.u != want {
		t.Errorf("got %+v\nwant %+v", s.vars.u, want)
	}
}

// TestBuildCountsVar: Build reports the count, through the whole pass.
func TestBuildCountsVar(t *testing.T) {
	need(t, "tar2sqfs")
	b, err := build(t, testimage.Options{}, filepath.Join(t.TempDir(), "root.sqfs"))
	if err != nil {
		t.Fatal(err)
	}
	// The test image's /var: var/lib and var/lib/seed.
	seed := int64(len("from the image\n"))
	if want := (VarUsage{Size: seed, Blocks: 2 * VarBlock, Files: 1, Inodes: 2}); b.Var != want {
		t.Errorf("Var = %+v, want %+v", b.Var, want)
	}
}
