package initbin

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"testing"

	"github.com/slate-os/slate/initramfs/internal/initbuild"
)

func TestBinary(t *testing.T) {
	b, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("embedded init is not ELF: %v", err)
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Errorf("embedded init: machine %v type %v, want a static x86-64 executable", f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("embedded init is dynamically linked")
		}
	}
	t.Logf("embedded init: %d bytes, %d compressed", len(b), len(compressed))
}

// TestEmbeddedInitIsFresh rebuilds cmd/slate-init the way the generator
// does and compares it with the embedded copy. It runs in -short mode too:
// the build takes a few seconds and a stale init is a silent bug.
func TestEmbeddedInitIsFresh(t *testing.T) {
	emb, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	info, err := buildinfo.Read(bytes.NewReader(emb))
	if err != nil {
		t.Fatalf("embedded init has no build info: %v", err)
	}
	goVersion, err := initbuild.GoVersion()
	if err != nil {
		t.Fatal(err)
	}
	if info.GoVersion != goVersion {
		t.Skipf("the embedded init was built with %s and this go is %s: a rebuild cannot be compared byte for byte, so staleness is not checked (run make init-binary with %s to check it)",
			info.GoVersion, goVersion, info.GoVersion)
	}
	root, err := initbuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := initbuild.Build(root)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh, emb) {
		t.Fatalf("embedded init is stale: run make init-binary (go generate ./initramfs/initbin) and commit initramfs/initbin/slate-init.zst (embedded %d bytes, fresh build %d bytes)", len(emb), len(fresh))
	}
}
