package agent_test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The agent shares with the builder only the contract (artifact, signature)
// and what boot/ holds: it must not import builder/, not even from a test,
// so a builder change cannot silently change what nodes accept.
func TestNoBuilderImports(t *testing.T) {
	statSources(t, "..")
	out, err := exec.Command("go", "list", "-test", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const builder = "github.com/slate-os/slate/builder"
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 6 {
		t.Fatalf("go list printed too little:\n%s", out)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		for _, d := range f[1:] {
			if d == builder || strings.HasPrefix(d, builder+"/") {
				t.Errorf("%s imports %s", f[0], d)
			}
		}
	}
}

// statSources stats the module's Go files: go test caches a passing result
// keyed on the files a test opens or stats, and the go list it runs is not
// one of them, so an import added later would go unseen.
func statSources(t *testing.T, root string) {
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "build" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			_, err = os.Stat(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
