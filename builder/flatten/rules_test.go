package flatten

import (
	"archive/tar"
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/slate-os/slate/internal/testimage"
)

type Es = []testimage.Entry

// The OCI image-layer rules (image-spec layer.md), case by case. Each case
// runs three ways: the two passes (the reference), the one pass (which may
// give up, never differ), and Stream's choice.
var ruleCases = []struct {
	name    string
	layers  []Es
	want    root
	err     []string // the error says all of these
	onePass bool     // the one pass handles it (does not give up)
	umoci   string   // why umoci (umoci_test.go) differs, if it does
}{
	{
		name:    "a whiteout written with a leading slash hides the file",
		layers:  []Es{{D("etc"), F("etc/secret", "s"), F("etc/keep", "k")}, {F("/etc/.wh.secret", "")}},
		want:    root{"etc": "d 755", "etc/keep": "f 644 k"},
		onePass: true,
	},
	{
		name:    "./ names are the same paths",
		layers:  []Es{{D("./"), D("./etc/"), F("./etc/a", "1")}, {F("./etc/.wh.a", ""), F("./etc/b", "2"), F("etc//c", "3")}},
		want:    root{".": "d 755", "etc": "d 755", "etc/b": "f 644 2", "etc/c": "f 644 3"},
		onePass: true,
	},
	{
		name: "an opaque directory hides its lower contents, whatever its place in the layer",
		layers: []Es{
			{D("a"), F("a/x", "x"), D("a/sub"), F("a/sub/y", "y"), F("b", "b")},
			{D("a"), F("a/z", "z"), F("a/.wh..wh..opq", "")},
		},
		want:    root{"a": "d 755", "a/z": "f 644 z", "b": "f 644 b"},
		onePass: true,
	},
	{
		name:    "an opaque root",
		layers:  []Es{{F("x", "x"), D("d"), F("d/y", "y")}, {F(".wh..wh..opq", ""), F("n", "n")}},
		want:    root{"n": "f 644 n"},
		onePass: true,
	},
	{
		name:   "a name twice in one layer: the last wins",
		layers: []Es{{F("a", "one"), F("b", "b"), F("a", "two")}},
		want:   root{"a": "f 644 two", "b": "f 644 b"},
	},
	{
		name:   "a name twice in an upper layer: the last wins over the lower too",
		layers: []Es{{F("a", "base")}, {F("a", "one"), F("a", "two")}},
		want:   root{"a": "f 644 two"},
	},
	{
		name:   "a directory then a file of the same name: the file, nothing under it",
		layers: []Es{{D("d"), F("d/x", "x"), F("d", "file")}},
		want:   root{"d": "f 644 file"},
	},
	{
		name:   "a directory twice: the last's attributes, the children stay",
		layers: []Es{{D("d"), F("d/x", "x"), {Name: "d", Type: tar.TypeDir, Mode: 0o700}}},
		want:   root{"d": "d 700", "d/x": "f 644 x"},
	},
	{
		name: "a nested whiteout removes exactly its subtree",
		layers: []Es{
			{D("etc"), D("etc/sub"), F("etc/sub/a", "a"), D("etc/sub/deep"), F("etc/sub/deep/b", "b"), F("etc/subway", "w"), F("etc/sub2", "2"), D("etc/su"), F("etc/su/b", "su")},
			{F("etc/.wh.sub", "")},
		},
		want:    root{"etc": "d 755", "etc/subway": "f 644 w", "etc/sub2": "f 644 2", "etc/su": "d 755", "etc/su/b": "f 644 su"},
		onePass: true,
	},
	{
		name:    "a file whited out, then added again higher up",
		layers:  []Es{{F("a", "v1")}, {F(".wh.a", "")}, {F("a", "v3")}},
		want:    root{"a": "f 644 v3"},
		onePass: true,
	},
	{
		name: "whiteouts hide the lower layers only, wherever they stand in the layer",
		layers: []Es{
			{F("a", "v1"), D("d"), F("d/old", "o")},
			{F("a", "v2"), F(".wh.a", ""), D("d"), F("d/new", "n"), F(".wh.d", "")},
		},
		want:    root{"a": "f 644 v2", "d": "d 755", "d/new": "f 644 n"},
		onePass: true,
	},
	{
		name:   "a whited-out directory's children written again without it",
		layers: []Es{{F("a", "x")}, {F(".wh.a", ""), F("a/b", "b")}},
		want:   root{"a/b": "f 644 b"},
	},
	{
		name:   "a whiteout or opaque marker under a file hides nothing",
		layers: []Es{{F("a", "x"), F("b", "y")}, {F("a/.wh.c", ""), F("b/.wh..wh..opq", "")}},
		want:   root{"a": "f 644 x", "b": "f 644 y"},
	},
	{
		name:    "a hard link to an earlier file of its layer (targets normalized like names)",
		layers:  []Es{{F("a", "data"), L("b", "/a"), L("c", "./a")}},
		want:    root{"a": "f 644 data", "b": "h -> a", "c": "h -> a"},
		onePass: true,
	},
	{
		name:   "a hard link to a lower layer's file",
		layers: []Es{{F("a", "data")}, {L("b", "a")}},
		want:   root{"a": "f 644 data", "b": "h -> a"},
	},
	{
		name:   "a hard link keeps its file when the target is whited out later",
		layers: []Es{{F("a", "data"), L("b", "a"), L("c", "a")}, {F(".wh.a", "")}},
		want:   root{"b": "f 644 data", "c": "h -> b"},
	},
	{
		name:   "a hard link keeps its file when the target is replaced later",
		layers: []Es{{F("a", "old"), L("b", "a")}, {F("a", "new")}},
		want:   root{"a": "f 644 new", "b": "f 644 old"},
	},
	{
		name:   "a hard link keeps its file when the target is replaced later in the layer",
		layers: []Es{{F("a", "1"), L("b", "a"), F("a", "2")}},
		want:   root{"a": "f 644 2", "b": "f 644 1"},
	},
	{
		name:   "a hard link in an upper layer to a file whited out between",
		layers: []Es{{F("a", "data")}, {F(".wh.a", ""), F("a", "new"), L("b", "a")}},
		want:   root{"a": "f 644 new", "b": "h -> a"},
	},
	{
		name:    "symbolic links point anywhere: they are data",
		layers:  []Es{{S("x", "../../../../etc/shadow"), S("y", "/proc/self/root"), S("z", "..")}},
		want:    root{"x": "s -> ../../../../etc/shadow", "y": "s -> /proc/self/root", "z": "s -> .."},
		onePass: true,
	},
	{
		name:    "a directory replaces a lower file, and a file a lower directory",
		layers:  []Es{{F("a", "x"), D("d"), F("d/x", "x")}, {D("a"), F("a/b", "b"), F("d", "f")}},
		want:    root{"a": "d 755", "a/b": "f 644 b", "d": "f 644 f"},
		onePass: false, // a lower file where an upper layer has entries: the one pass cannot tell the order
	},
	{
		name:    "AUFS's bookkeeping is skipped",
		layers:  []Es{{D(".wh..wh.plnk"), F(".wh..wh.plnk/123.456", "x"), F(".wh..wh.aufs", ""), F("a", "a")}},
		want:    root{"a": "f 644 a"},
		onePass: true,
		umoci:   "umoci 0.4.7 unpacks .wh..wh.plnk/ as a directory; the spec says no .wh. name can be in a filesystem",
	},
	{
		name: "devices and FIFOs",
		layers: []Es{{D("dev"), {Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3},
			{Name: "run", Type: tar.TypeFifo}}},
		want:    root{"dev": "d 755", "dev/null": "c 1,3", "run": "p"},
		onePass: true,
	},

	// Errors name the layer and the entry.
	{name: "a name that climbs out of the root", layers: []Es{{F("a", "a")}, {F("../evil", "x")}}, err: []string{"(2 of 2)", `"../evil"`, "climbs out of the root"}},
	{name: "a name that climbs out halfway", layers: []Es{{F("a/../../evil", "x")}}, err: []string{"(1 of 1)", `"a/../../evil"`, "climbs out"}},
	{name: "a hard link that climbs out", layers: []Es{{F("a", "x"), L("b", "../../etc/shadow")}}, err: []string{"(1 of 1)", "/b: hard link to \"../../etc/shadow\"", "climbs out"}},
	{name: "a hard link to nothing", layers: []Es{{F("a", "x")}, {L("b", "nope")}}, err: []string{"(2 of 2)", "/b: hard link to /nope, which does not exist"}},
	{name: "a hard link to a directory", layers: []Es{{D("d"), L("b", "d")}}, err: []string{"(1 of 1)", "/b: hard link to /d, a directory"}},
	{name: "a hard link to the root", layers: []Es{{L("b", "./")}}, err: []string{"/b: hard link to the root"}},
	{
		name:   "an entry under a symbolic link",
		layers: []Es{{D("usr"), D("usr/lib"), S("lib", "usr/lib")}, {F("lib/x", "x")}},
		err:    []string{"(2 of 2)", "/lib/x: /lib is not a directory"},
	},
	{name: "an entry under a file", layers: []Es{{F("a", "x"), F("a/b", "y")}}, err: []string{"/a/b: /a is not a directory"}},
	{
		name:   "a whiteout under a symbolic link",
		layers: []Es{{D("usr"), D("usr/lib"), F("usr/lib/secret", "s"), S("lib", "usr/lib")}, {F("lib/.wh.secret", "")}},
		err:    []string{"(2 of 2)", "/lib/.wh.secret: /lib is not a directory"},
	},
	{name: "a whiteout that names the directory itself", layers: []Es{{D("etc"), D("etc/sub")}, {F("etc/sub/.wh..", "")}}, err: []string{"(2 of 2)", "/etc/sub/.wh..: a whiteout that names no file"}},
	{name: "a whiteout that names the parent", layers: []Es{{D("etc")}, {F("etc/sub/.wh...", "")}}, err: []string{"/etc/sub/.wh...: a whiteout that names no file"}},
	{name: "a bare whiteout prefix", layers: []Es{{F("etc/.wh.", "")}}, err: []string{"/etc/.wh.: a whiteout that names no file"}},
	{name: "a whiteout name as a directory", layers: []Es{{F("a/.wh.b/c", "x")}}, err: []string{"/a/.wh.b/c: .wh.b is a whiteout name used as a directory"}},
	{name: "a root that is a file", layers: []Es{{F(".", "x")}}, err: []string{`".": the root must be a directory`}},
	{name: "an unknown entry type", layers: []Es{{{Name: "v", Type: 'V'}}}, err: []string{`/v: tar entry type 'V'`}},
}

func TestRules(t *testing.T) {
	for _, c := range ruleCases {
		t.Run(c.name, func(t *testing.T) {
			img := layersImage(t, c.layers...)
			for _, m := range []struct {
				name string
				mode mode
			}{{"two passes", modeTwoPass}, {"one pass", modeOnePass}, {"auto", modeAuto}} {
				got, err := flat(t, img, Options{mode: m.mode})
				if m.mode == modeOnePass && errors.Is(err, errBail) {
					if c.onePass {
						t.Errorf("%s: gave up on an image it should handle", m.name)
					}
					continue
				}
				if c.err != nil {
					if err == nil {
						t.Errorf("%s: no error, got\n%s", m.name, got)
						continue
					}
					for _, p := range c.err {
						if !strings.Contains(err.Error(), p) {
							t.Errorf("%s: error %q does not say %q", m.name, err, p)
						}
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", m.name, err)
					continue
				}
				if !equal(got, c.want) {
					t.Errorf("%s: got\n%swant\n%s", m.name, got, c.want)
				}
				if m.mode == modeOnePass && !c.onePass {
					t.Logf("%s: handled an image not marked onePass", m.name)
				}
			}
		})
	}
}

// Headers testimage.Tar does not write.
func TestOddHeaders(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "git archive"}})
	tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("a"))
	tw.Close()
	got, err := flat(t, imageOf(t, newLayer(t, buf.Bytes(), "gzip")), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (root{"a": "f 644 a"}); !equal(got, want) {
		t.Errorf("a PAX global header: got\n%swant\n%s", got, want)
	}
}
