package state

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/testtool"
)

func mkfsExt4(t *testing.T, p string) {
	t.Helper()
	mkfs := testtool.Path(t, "mkfs.ext4")
	if out, err := exec.Command(mkfs, "-q", "-F", "-L", "slate-state", p).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
}

func sparse(t *testing.T, size int64, head []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "state.img")
	if err := os.WriteFile(p, head, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func detect(t *testing.T, p string) Kind {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := Detect(f)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDetect(t *testing.T) {
	marker := sparse(t, 16<<20, []byte(boot.StateUnformatted))
	if k := detect(t, marker); k != Unformatted {
		t.Errorf("marker: %s", k)
	}
	zeros := sparse(t, 16<<20, nil)
	if k := detect(t, zeros); k != Damaged {
		t.Errorf("zeros: %s", k)
	}
	f, _ := os.Open(zeros)
	if d := Describe(f); !strings.Contains(d, "zeros") {
		t.Errorf("Describe(zeros) = %q", d)
	}
	f.Close()
	garbage := sparse(t, 16<<20, bytes.Repeat([]byte("garbage!"), 1024))
	if k := detect(t, garbage); k != Damaged {
		t.Errorf("garbage: %s", k)
	}
	// A marker that is only a prefix of the real one is not the marker.
	partial := sparse(t, 16<<20, []byte(boot.StateUnformatted[:10]))
	if k := detect(t, partial); k != Damaged {
		t.Errorf("partial marker: %s", k)
	}
	short := sparse(t, 100, nil)
	if f, _ := os.Open(short); f != nil {
		if _, err := Detect(f); err == nil {
			t.Error("a 100-byte partition was read without error")
		}
		f.Close()
	}

	ext4 := sparse(t, 16<<20, nil)
	mkfsExt4(t, ext4)
	if k := detect(t, ext4); k != Ext4 {
		t.Errorf("ext4: %s", k)
	}

	// Some mke2fs versions keep sector 0 (the boot block): formatting over
	// the marker can leave both. The filesystem must win, and ClearMarker
	// then wipes the marker. Put the marker back to be sure to test that.
	both := sparse(t, 16<<20, []byte(boot.StateUnformatted))
	mkfsExt4(t, both)
	if rw, err := os.OpenFile(both, os.O_RDWR, 0); err == nil {
		rw.WriteAt([]byte(boot.StateUnformatted), 0)
		rw.Close()
	}
	if k := detect(t, both); k != Ext4 {
		t.Errorf("marker+ext4: %s, want ext4", k)
	}
	rw, _ := os.OpenFile(both, os.O_RDWR, 0)
	if err := ClearMarker(rw); err != nil {
		t.Fatal(err)
	}
	rw.Close()
	b, _ := os.ReadFile(both)
	if bytes.Contains(b[:512], []byte("SLATE")) {
		t.Error("marker still there")
	}
	if k := detect(t, both); k != Ext4 {
		t.Errorf("after ClearMarker: %s", k)
	}
	if out, err := exec.Command("e2fsck", "-fn", both).CombinedOutput(); err != nil {
		t.Errorf("e2fsck after ClearMarker: %v\n%s", err, out)
	}

	// ClearMarker refuses a partition without a filesystem.
	rw, _ = os.OpenFile(marker, os.O_RDWR, 0)
	defer rw.Close()
	if err := ClearMarker(rw); err == nil {
		t.Error("ClearMarker wiped the marker of an unformatted partition")
	}
}

func TestMachineID(t *testing.T) {
	dir := t.TempDir()
	id, created, replaced, err := MachineID(dir)
	if err != nil || !created || replaced != "" || !ValidMachineID(id) {
		t.Fatalf("MachineID = %q %v %q %v", id, created, replaced, err)
	}
	if id[12] != '4' || !strings.ContainsRune("89ab", rune(id[16])) {
		t.Errorf("%s is not formatted as a v4 UUID", id)
	}
	b, _ := os.ReadFile(filepath.Join(dir, MachineIDFile))
	if string(b) != id+"\n" {
		t.Errorf("file holds %q", b)
	}
	// Stable across boots.
	again, created, _, err := MachineID(dir)
	if err != nil || created || again != id {
		t.Errorf("second boot: %q %v %v", again, created, err)
	}
	// A damaged file is replaced, with a warning.
	os.Chmod(filepath.Join(dir, MachineIDFile), 0o644)
	os.WriteFile(filepath.Join(dir, MachineIDFile), []byte("uninitialized\n"), 0o644)
	third, created, replaced, err := MachineID(dir)
	if err != nil || !created || third == id || !strings.Contains(replaced, "uninitialized") {
		t.Errorf("damaged: %q %v %q %v", third, created, replaced, err)
	}
	for s, ok := range map[string]bool{
		id: true, strings.ToUpper(id): false, id[:31]: false, strings.Repeat("0", 32): false, id + "0": false, "": false,
	} {
		if ValidMachineID(s) != ok {
			t.Errorf("ValidMachineID(%q) = %v", s, !ok)
		}
	}
	if Populated(dir) {
		t.Error("populated before MarkPopulated")
	}
	if err := MarkPopulated(dir, "1.4"); err != nil || !Populated(dir) {
		t.Errorf("MarkPopulated: %v", err)
	}
}

func TestCopyTree(t *testing.T) {
	root := os.Getuid() == 0
	src := filepath.Join(t.TempDir(), "var")
	dst := filepath.Join(t.TempDir(), "state")
	mk := func(p string, mode os.FileMode) {
		if err := os.MkdirAll(filepath.Join(src, p), mode); err != nil {
			t.Fatal(err)
		}
		unix.Chmod(filepath.Join(src, p), uint32(mode)) // os.Chmod drops 0o7000 given as plain bits
	}
	wf := func(p, content string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(src, p), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		unix.Chmod(filepath.Join(src, p), uint32(mode))
	}
	os.Mkdir(src, 0o755)
	mk("tmp", 0o1777)
	mk("lib/dpkg", 0o755)
	mk("log/journal", 0o2755)
	mk("empty/ro", 0o555)
	wf("lib/dpkg/status", "Package: base-files\n", 0o644)
	wf("lib/suid", "x", 0o4755)
	wf("lib/helper", "x", 0o4755)
	os.Link(filepath.Join(src, "lib/dpkg/status"), filepath.Join(src, "lib/status-link"))
	os.Symlink("/run", filepath.Join(src, "run"))
	os.Symlink("../run/lock", filepath.Join(src, "lock"))
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(src, "lib/dpkg/status"), "user.slate", []byte("kept"), 0); err != nil {
		t.Logf("no user xattrs here: %v", err)
	}
	if root {
		os.Lchown(filepath.Join(src, "log/journal"), 0, 4) // adm
		os.Lchown(filepath.Join(src, "lib/suid"), 1234, 5678)
		os.Lchown(filepath.Join(src, "lib/helper"), 1234, 5678)
		unix.Chmod(filepath.Join(src, "lib/helper"), 0o4755) // chown cleared it
		os.Lchown(filepath.Join(src, "lock"), 1234, 5678)
		if err := unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(src, "lib/dpkg/status"), old, old)
	os.Chtimes(filepath.Join(src, "lib/dpkg"), old, old)

	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	// Something already on the destination is kept (an interrupted copy, or lost+found).
	os.MkdirAll(filepath.Join(dst, "lib"), 0o700)
	os.WriteFile(filepath.Join(dst, "lib/suid"), []byte("mine"), 0o600)
	os.Mkdir(filepath.Join(dst, "lost+found"), 0o700)

	st, err := CopyTree(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped != 1 || st.Symlinks != 2 || st.Hardlinks != 1 {
		t.Errorf("stats: %+v", st)
	}
	t.Log(st)

	check := func(p string, mode os.FileMode, uid, gid int) {
		t.Helper()
		var s, d unix.Stat_t
		if err := unix.Lstat(filepath.Join(dst, p), &d); err != nil {
			t.Errorf("%s: %v", p, err)
			return
		}
		unix.Lstat(filepath.Join(src, p), &s)
		if d.Mode != s.Mode {
			t.Errorf("%s: mode %o, want %o", p, d.Mode, s.Mode)
		}
		if uid >= 0 && (int(d.Uid) != uid || int(d.Gid) != gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, d.Uid, d.Gid, uid, gid)
		}
		if d.Mode&unix.S_IFMT != unix.S_IFLNK && d.Mtim != s.Mtim {
			t.Errorf("%s: mtime %v, want %v", p, d.Mtim, s.Mtim)
		}
	}
	var sd unix.Stat_t
	unix.Stat(filepath.Join(src, "lib/helper"), &sd)
	if sd.Mode&0o7777 != 0o4755 {
		t.Fatalf("test setup: source mode %o", sd.Mode)
	}
	check(".", 0, -1, -1)
	check("tmp", 0, -1, -1)
	check("lib/dpkg", 0, -1, -1)
	check("lib/dpkg/status", 0, -1, -1)
	check("empty/ro", 0, -1, -1)
	check("fifo", 0, -1, -1)
	check("run", 0, -1, -1)
	check("log/journal", 0, -1, -1) // setgid
	check("lib/helper", 0, -1, -1)  // setuid
	if root {
		check("log/journal", 0, 0, 4)
		check("lock", 0, 1234, 5678)
		check("lib/helper", 0, 1234, 5678)
		check("null", 0, 0, 0)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "lib/dpkg/status")); string(b) != "Package: base-files\n" {
		t.Errorf("content %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "lib/suid")); string(b) != "mine" {
		t.Errorf("an existing file was overwritten: %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "lock")); l != "../run/lock" {
		t.Errorf("symlink -> %q", l)
	}
	var a, b unix.Stat_t
	unix.Stat(filepath.Join(dst, "lib/dpkg/status"), &a)
	unix.Stat(filepath.Join(dst, "lib/status-link"), &b)
	if a.Ino != b.Ino {
		t.Error("hard link became two files")
	}
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(filepath.Join(src, "lib/dpkg/status"), "user.slate", buf); err == nil {
		m, err := unix.Getxattr(filepath.Join(dst, "lib/dpkg/status"), "user.slate", buf)
		if err != nil || m != n || string(buf[:m]) != "kept" {
			t.Errorf("xattr: %q %v", buf[:max(m, 0)], err)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "lost+found")); err != nil {
		t.Error("lost+found was removed")
	}

	// A second run (after a power cut) copies nothing again.
	st, err = CopyTree(src, dst)
	if err != nil || st.Files != 0 || st.Dirs != 0 {
		t.Errorf("second run: %+v %v", st, err)
	}
}
