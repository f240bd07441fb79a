package builder

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slate-os/slate/builder/rootfs"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/internal/testtool"
)

func TestStateSize(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name     string
		v        rootfs.VarUsage
		explicit int64
		size     int64  // want; 0 with an error
		reason   string // in Reason, or in the error
	}{
		// The reference image's /var.
		{"tiny", rootfs.VarUsage{Size: 3900000, Blocks: 6225920, Files: 682, Inodes: 726}, 0, 64 * mib, "default"},
		{"empty", rootfs.VarUsage{}, 0, 64 * mib, "default"},
		// debootstrap's trixie: apt's cache.
		{"138MiB", rootfs.VarUsage{Size: 138 * mib, Blocks: 140 * mib, Files: 4210, Inodes: 4600}, 0, 256 * mib, "holds the image's /var (138 MiB, 4210 files) with headroom"},
		// The QEMU test's image: one 150 MB file.
		{"150MB", rootfs.VarUsage{Size: 161292817, Blocks: 163516416, Files: 684, Inodes: 728}, 0, 256 * mib, "with headroom"},
		// Many small files: the inodes decide.
		{"inodes", rootfs.VarUsage{Size: 21 * mib, Blocks: 117 * mib, Files: 30000, Inodes: 30004}, 0, 192 * mib, "30000 files"},
		{"explicit", rootfs.VarUsage{Size: 138 * mib, Blocks: 140 * mib, Files: 4210, Inodes: 4600}, 512 * mib, 512 * mib, "disk.stateSize"},
		{"explicit tight", rootfs.VarUsage{Size: 138 * mib, Blocks: 140 * mib, Files: 4210, Inodes: 4600}, 170 * mib, 170 * mib, "disk.stateSize"},
		{"explicit too small", rootfs.VarUsage{Size: 138 * mib, Blocks: 140 * mib, Files: 4210, Inodes: 4600}, 64 * mib, 0,
			"disk.stateSize: 64MiB cannot hold the image's /var (138 MiB, 4210 files): the first boot copies it onto the state partition, which needs at least 170 MiB; raise disk.stateSize (or --state-size)"},
		{"explicit too few inodes", rootfs.VarUsage{Size: 21 * mib, Blocks: 30 * mib, Files: 30000, Inodes: 30004}, 100 * mib, 0, "needs at least 118 MiB"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, err := StateSize(c.v, c.explicit)
			if c.size == 0 {
				if err == nil || !strings.Contains(err.Error(), c.reason) {
					t.Fatalf("err = %v, want one saying %q", err, c.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.Size != c.size || !strings.Contains(st.Reason, c.reason) || st.Var != c.v {
				t.Errorf("got %d MiB %q, want %d MiB %q", st.Size>>20, st.Reason, c.size>>20, c.reason)
			}
			if st.Size < st.Needs || st.Size < int64(spec.DefaultStateSize) && c.explicit == 0 {
				t.Errorf("size %d below what /var needs (%d) or the default", st.Size, st.Needs)
			}
		})
	}
}

// TestStateNeedsFitsExt4 checks the model against mkfs.ext4 itself: a tree
// populated with mke2fs -d (as the first boot's copy would lay it out)
// fits in the partition stateNeeds says.
func TestStateNeedsFitsExt4(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100 MB")
	}
	mkfs := testtool.Path(t, "mkfs.ext4")
	for _, c := range []struct {
		name         string
		files, size  int
		dirs, linkTo int
	}{
		{"big files", 12, 5<<20 + 123, 3, 0},
		{"small files", 6000, 700, 40, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "var")
			var u rootfs.VarUsage
			body := make([]byte, c.size)
			for i := range body {
				body[i] = byte(i*7 + 1) // no zero blocks: mke2fs -d would make holes of them
			}
			for d := 0; d < c.dirs; d++ {
				if err := os.MkdirAll(filepath.Join(dir, fmt.Sprintf("d%d", d)), 0o755); err != nil {
					t.Fatal(err)
				}
				u.Inodes++
				u.Blocks += rootfs.VarBlock
			}
			for i := 0; i < c.files; i++ {
				p := filepath.Join(dir, fmt.Sprintf("d%d/f%d", i%c.dirs, i))
				if err := os.WriteFile(p, body, 0o644); err != nil {
					t.Fatal(err)
				}
				u.Inodes++
				u.Files++
				u.Size += int64(c.size)
				u.Blocks += (int64(c.size) + rootfs.VarBlock - 1) / rootfs.VarBlock * rootfs.VarBlock
			}
			need := stateNeeds(u.Blocks, u.Inodes)
			img := filepath.Join(t.TempDir(), "state.img")
			if err := os.WriteFile(img, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, need); err != nil {
				t.Fatal(err)
			}
			// The init's options (initramfs/init/run/state.go).
			out, err := exec.Command(mkfs, "-F", "-q", "-L", "slate-state", "-E", "lazy_itable_init=1,lazy_journal_init=1", "-d", dir, img).CombinedOutput()
			if err != nil {
				t.Errorf("%+v does not fit in %d MiB: %v\n%s", u, need>>20, err, out)
			}
			t.Logf("%+v: needs %d MiB", u, need>>20)
		})
	}
}
