package source

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// A layout's manifest blob edited in place is not the image its index names.
func TestLayoutManifestEdited(t *testing.T) {
	img := image(t, "amd64", "amd")
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("oci:"+dir, Options{}); err != nil {
		t.Fatalf("untouched: %v", err)
	}
	d, _ := img.Digest()
	blob := filepath.Join(dir, "blobs", "sha256", d.Hex)
	raw, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	// Still a valid manifest: another annotation.
	edited := strings.Replace(string(raw), `"schemaVersion":2`, `"schemaVersion":2,"annotations":{"x":"y"}`, 1)
	if edited == string(raw) {
		t.Fatalf("manifest %s: nothing to edit", raw)
	}
	if err := os.WriteFile(blob, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open("oci:"+dir, Options{})
	if err == nil || !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), "not what the index names") {
		t.Fatalf("edited manifest: %v", err)
	}
}
