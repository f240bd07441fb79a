package flatten

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/slate-os/slate/internal/testtool"
)

// umoci (Debian package umoci, installed by make deps for make test) is another
// implementation of the layer rules: where both accept an image, the roots
// must be the same, hard links included. It differs on purpose where slate
// refuses (an entry under a symbolic link, which umoci follows), so only
// images both accept are compared.

func needUmoci(t *testing.T) {
	t.Helper()
	testtool.Need(t, "umoci") // the oracle tests need it
	testtool.Root(t, "umoci unpacks devices and owners as root only")
}

// umociRoot unpacks img with umoci; the root in canonical form.
func umociRoot(t *testing.T, img v1.Image) (map[string]string, error) {
	dir := t.TempDir()
	lp, err := layout.Write(filepath.Join(dir, "oci"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "t"})); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	if out, err := exec.Command("umoci", "raw", "unpack", "--image", filepath.Join(dir, "oci")+":t", rootfs).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("umoci: %v: %s", err, out)
	}
	got := map[string]string{}
	inodes := map[uint64][]string{}
	err = filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(rootfs, p)
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		switch m := fi.Mode(); {
		case m.IsDir():
			got[rel] = "d"
			return nil
		case m&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			got[rel] = "s -> " + target
		case m.IsRegular():
			b, _ := os.ReadFile(p)
			got[rel] = "f " + string(b)
		case m&fs.ModeCharDevice != 0:
			got[rel] = fmt.Sprintf("c %d,%d", st.Rdev>>8&0xfff, st.Rdev&0xff)
		case m&fs.ModeNamedPipe != 0:
			got[rel] = "p"
		default:
			got[rel] = "?"
		}
		inodes[st.Ino] = append(inodes[st.Ino], rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, names := range inodes {
		sort.Strings(names)
		for _, n := range names {
			got[n] += " ino=" + strings.Join(names, ",")
		}
	}
	return got, nil
}

// canonical is r as umociRoot writes a root: no modes, hard links as
// shared inodes, implicit directories present.
func canonical(r root) map[string]string {
	out := map[string]string{}
	groups := map[string][]string{}
	for n, v := range r {
		if n == "." {
			continue
		}
		ancestors(n, func(p string) bool {
			if p != "." {
				out[p] = "d"
			}
			return true
		})
		switch {
		case strings.HasPrefix(v, "d "):
			out[n] = "d"
			continue
		case strings.HasPrefix(v, "h -> "):
			target := strings.TrimPrefix(v, "h -> ")
			groups[target] = append(groups[target], n)
			v = r[target]
		default:
			groups[n] = append(groups[n], n)
		}
		if strings.HasPrefix(v, "f ") {
			v = "f " + strings.SplitN(v, " ", 3)[2] // drop the mode
		}
		out[n] = v
	}
	for _, names := range groups {
		sort.Strings(names)
		for _, n := range names {
			out[n] += " ino=" + strings.Join(names, ",")
		}
	}
	return out
}

func sameRoot(a, b map[string]string) string {
	var diffs []string
	for k, v := range a {
		if b[k] != v {
			diffs = append(diffs, fmt.Sprintf("  %s: slate %q, umoci %q", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("  %s: slate none, umoci %q", k, v))
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "\n")
}

func TestRulesAgainstUmoci(t *testing.T) {
	needUmoci(t)
	for _, c := range ruleCases {
		if c.err != nil || c.umoci != "" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			img := layersImage(t, c.layers...)
			theirs, err := umociRoot(t, img)
			if err != nil {
				t.Fatal(err)
			}
			if d := sameRoot(canonical(c.want), theirs); d != "" {
				t.Errorf("slate and umoci differ:\n%s", d)
			}
		})
	}
}

var umociImages = 400

func TestRandomAgainstUmoci(t *testing.T) {
	needUmoci(t)
	if testing.Short() {
		t.Skip("slow: one umoci run per image")
	}
	r := rand.New(rand.NewPCG(3, 4))
	compared := 0
	for i := 0; i < umociImages; i++ {
		// umoci applies whiteouts where they stand in the tar; the spec
		// applies them first. Put them first, as layers should.
		layers := randomLayers(r, true)
		for i, es := range layers {
			sort.SliceStable(es, func(a, b int) bool {
				return strings.Contains(es[a].Name, whPrefix) && !strings.Contains(es[b].Name, whPrefix)
			})
			layers[i] = es
		}
		img := layersImage(t, layers...)
		ours, err := flat(t, img, Options{mode: modeTwoPass})
		if err != nil {
			continue // slate refuses it: umoci may differ on purpose
		}
		theirs, err := umociRoot(t, img)
		if err != nil {
			t.Errorf("image %d: slate takes it, umoci does not: %v\nlayers: %s\nslate:\n%s", i, err, describe(layers), ours)
			continue
		}
		if d := sameRoot(canonical(ours), theirs); d != "" {
			t.Errorf("image %d: slate and umoci differ:\n%s\nlayers: %s", i, d, describe(layers))
		}
		compared++
	}
	t.Logf("%d images compared", compared)
}
