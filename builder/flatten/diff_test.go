package flatten

import (
	"archive/tar"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// randomLayers makes small layer stacks over few names, so that names
// collide: duplicates, whiteouts of what lower layers have, opaque markers,
// hard links, files where directories were.
// With leafLinks, symbolic links only get names nothing is under, so that
// no entry is ever under one.
func randomLayers(r *rand.Rand, leafLinks bool) []Es {
	names := []string{"a", "b", "a/a", "a/b", "b/a", "a/a/a", "a/b/c", "c"}
	pick := func() string { return names[r.IntN(len(names))] }
	linkName := pick
	if leafLinks {
		leaves := []string{"s", "a/s", "a/a/s"}
		linkName = func() string { return leaves[r.IntN(len(leaves))] }
	}
	var layers []Es
	for range 1 + r.IntN(3) {
		var es Es
		for range r.IntN(7) {
			n := pick()
			switch k := r.IntN(20); {
			case k < 5:
				es = append(es, D(n))
			case k < 11:
				es = append(es, F(n, fmt.Sprint(r.IntN(100))))
			case k < 13:
				es = append(es, S(linkName(), pick()))
			case k < 16:
				es = append(es, L(n, pick()))
			case k < 19:
				dir, base := splitName(n)
				es = append(es, F(dir+".wh."+base, ""))
			default:
				dirs := []string{"", "a/", "b/", "a/a/"}
				es = append(es, F(dirs[r.IntN(len(dirs))]+whOpaque, ""))
			}
		}
		layers = append(layers, es)
	}
	return layers
}

func splitName(n string) (dir, base string) {
	for i := len(n) - 1; i >= 0; i-- {
		if n[i] == '/' {
			return n[:i+1], n[i+1:]
		}
	}
	return "", n
}

// TestOnePassAgrees checks the one pass against the two on random images:
// it may give up, never differ. The two passes are the rules' reference
// (TestRules checks them case by case).
func TestOnePassAgrees(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 500
	}
	r := rand.New(rand.NewPCG(1, 2))
	var handled, errs int
	for i := range n {
		layers := randomLayers(r, false)
		img := layersImage(t, layers...)
		two, twoErr := flat(t, img, Options{mode: modeTwoPass})
		one, oneErr := flat(t, img, Options{mode: modeOnePass})
		if errors.Is(oneErr, errBail) {
			continue
		}
		handled++
		if twoErr != nil {
			errs++
		}
		if (oneErr == nil) != (twoErr == nil) || oneErr == nil && !equal(one, two) {
			t.Fatalf("image %d: the passes differ\nlayers: %s\none pass: %v\n%s\ntwo passes: %v\n%s", i, describe(layers), oneErr, one, twoErr, two)
		}
	}
	t.Logf("%d random images, %d taken by the one pass (%d of them errors)", n, handled, errs)
	if handled < n/6 {
		t.Errorf("the one pass gave up on %d of %d images", n-handled, n)
	}
}

func describe(layers []Es) string {
	s := ""
	for i, es := range layers {
		s += fmt.Sprintf("\n  layer %d:", i+1)
		for _, e := range es {
			switch e.Type {
			case tar.TypeDir:
				s += " " + e.Name + "/"
			case tar.TypeLink:
				s += " " + e.Name + "=>" + e.Link
			case tar.TypeSymlink:
				s += " " + e.Name + "->" + e.Link
			default:
				s += " " + e.Name + ":" + e.Body
			}
		}
	}
	return s
}
