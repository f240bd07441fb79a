package extensions

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/sysext"
	"github.com/slate-os/slate/sysext/store"
)

var bookworm = sysext.Release{ID: "debian", VersionID: "12"}

// fakeStore is a store of entries whose image files are sparse files of
// the right size.
type fakeStore struct {
	entries []store.Entry
	listErr error
}

func (s *fakeStore) List() ([]store.Entry, error) { return s.entries, s.listErr }
func (s *fakeStore) Prune(keep func(store.Entry) bool) ([]store.Entry, error) {
	var kept, gone []store.Entry
	for _, e := range s.entries {
		if keep(e) {
			kept = append(kept, e)
		} else {
			gone = append(gone, e)
		}
	}
	s.entries = kept
	return gone, nil
}
func (s *fakeStore) Artifact(d v1.Hash) (*artifact.Artifact, error) {
	return &artifact.Artifact{Digest: d}, nil
}

// ext makes a store entry: name, version, the release it is for, when it
// was added; its image file lives in dir.
func ext(t *testing.T, dir, name, version string, rel sysext.Release, added time.Time) store.Entry {
	t.Helper()
	sum := sha256.Sum256([]byte(dir + name + version + rel.String() + added.String()))
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	l := verity.Layout{DataSize: 8 * verity.BlockSize, HashOffset: 8 * verity.BlockSize, RootHash: hex.EncodeToString(sum[:]),
		Algorithm: "sha256", DataBlockSize: verity.BlockSize, HashBlockSize: verity.BlockSize}
	l.Size = l.MinSize()
	img := filepath.Join(dir, d.Hex)
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(l.Size)
	f.Close()
	return store.Entry{
		Digest: d, Added: added, ImagePath: img,
		Config: sysext.Config{Name: name, Version: version, Release: rel, Architecture: "amd64", OS: "linux", Image: l, Created: added},
	}
}

// fakeSys is a node: loop devices, dm devices, mounts and systemd-sysext,
// which "merges" by writing the extension-release files under root/usr.
type fakeSys struct {
	t    *testing.T
	root string
	log  []string

	loops    int
	openLoop map[string]bool
	dm       map[string]string // name -> table
	corrupt  map[string]int64  // dm name -> failing block
	mounted  map[string]string // dir -> dev
	hidden   []string

	noSysext   bool
	notMerged  map[string]bool // names systemd-sysext skips
	refreshErr error
}

func newFakeSys(t *testing.T, root string) *fakeSys {
	return &fakeSys{t: t, root: root, openLoop: map[string]bool{}, dm: map[string]string{}, corrupt: map[string]int64{},
		mounted: map[string]string{}, notMerged: map[string]bool{}}
}

func (f *fakeSys) system() System {
	return System{Loops: f, DM: (*fakeDM)(f), Mounts: (*fakeMounts)(f), Exec: (*fakeExec)(f)}
}

type fakeLoop struct {
	f    *fakeSys
	path string
}

func (l *fakeLoop) Path() string { return l.path }
func (l *fakeLoop) Close() error { delete(l.f.openLoop, l.path); return nil }

func (f *fakeSys) Attach(file string) (Loop, error) {
	p := fmt.Sprintf("/dev/loop%d", f.loops)
	f.loops++
	f.openLoop[p] = true
	f.log = append(f.log, "attach "+filepath.Base(file))
	return &fakeLoop{f, p}, nil
}

type fakeDM fakeSys

func (d *fakeDM) CreateVerity(name string, sectors uint64, table string) (string, error) {
	if _, ok := d.dm[name]; ok {
		return "", fmt.Errorf("dm: creating device %s: %w", name, syscall.EBUSY)
	}
	if !d.openLoop[strings.Fields(table)[1]] {
		d.t.Errorf("%s: the loop device %s was closed before the dm device held it", name, strings.Fields(table)[1])
	}
	d.dm[name] = fmt.Sprintf("0 %d verity %s", sectors, table)
	d.log = append(d.log, "dm create "+name)
	return "/dev/mapper/" + name, nil
}

func (d *fakeDM) Remove(name string) error {
	if _, ok := d.dm[name]; !ok {
		return fmt.Errorf("dm: removing %s: %w", name, syscall.ENXIO)
	}
	for dir, dev := range d.mounted {
		if dev == "/dev/mapper/"+name {
			return fmt.Errorf("dm: removing %s: %w (mounted at %s)", name, syscall.EBUSY, dir)
		}
	}
	delete(d.dm, name)
	d.log = append(d.log, "dm remove "+name)
	return nil
}

func (d *fakeDM) List(prefix string) ([]string, error) {
	var out []string
	for n := range d.dm {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out, nil
}

// eioReader is a verity device: zeros, and EIO from a block on.
type eioReader struct {
	r   io.Reader
	off int64
	bad int64 // byte offset of the failing block; -1: none
}

func (e *eioReader) Read(p []byte) (int, error) {
	if e.bad >= 0 && e.off >= e.bad {
		return 0, &os.PathError{Op: "read", Path: "dm", Err: syscall.EIO}
	}
	if e.bad >= 0 && e.off+int64(len(p)) > e.bad {
		p = p[:e.bad-e.off] // a short read up to the bad block, as the page cache gives
	}
	n, err := e.r.Read(p)
	e.off += int64(n)
	return n, err
}
func (e *eioReader) Close() error { return nil }

func (d *fakeDM) Open(dev string) (io.ReadCloser, error) {
	name := strings.TrimPrefix(dev, "/dev/mapper/")
	var sectors int64
	fmt.Sscanf(d.dm[name], "0 %d", &sectors)
	bad := int64(-1)
	if b, ok := d.corrupt[name]; ok {
		bad = b * verity.BlockSize
	}
	return &eioReader{r: io.LimitReader(zeros{}, sectors*512), bad: bad}, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type fakeMounts fakeSys

func (m *fakeMounts) Mount(dev, dir string) error {
	if _, err := os.Stat(dir); err != nil {
		return err
	}
	m.mounted[dir] = dev
	m.log = append(m.log, "mount "+strings.TrimPrefix(dir, m.root))
	return nil
}

func (m *fakeMounts) Unmount(dir string) error {
	if m.merged() {
		return fmt.Errorf("%w (systemd-sysext's overlay holds it)", syscall.EBUSY)
	}
	delete(m.mounted, dir)
	m.log = append(m.log, "umount "+strings.TrimPrefix(dir, m.root))
	return nil
}

func (m *fakeMounts) Mounted(dir string) (bool, error) { _, ok := m.mounted[dir]; return ok, nil }

func (m *fakeMounts) Hide(dir string) error {
	m.hidden = append(m.hidden, strings.TrimPrefix(dir, m.root))
	return nil
}

func (f *fakeSys) releaseDir() string { return filepath.Join(f.root, "usr/lib/extension-release.d") }

func (m *fakeMounts) merged() bool {
	des, _ := os.ReadDir((*fakeSys)(m).releaseDir())
	return len(des) > 0
}

type fakeExec fakeSys

func (e *fakeExec) LookPath(name string) (string, error) {
	if name != SystemdSysext || e.noSysext {
		return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
	}
	return "/usr/bin/systemd-sysext", nil
}

func (e *fakeExec) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	f := (*fakeSys)(e)
	e.log = append(e.log, "systemd-sysext "+strings.Join(args, " "))
	rd := f.releaseDir()
	os.RemoveAll(rd) // unmerge (refresh unmerges first)
	if args[0] == "unmerge" {
		return nil, nil
	}
	if e.refreshErr != nil {
		return []byte("Failed to merge: Device or resource busy\n"), e.refreshErr
	}
	os.MkdirAll(rd, 0o755)
	for dir := range f.mounted {
		name := filepath.Base(dir)
		if !e.notMerged[name] {
			os.WriteFile(filepath.Join(rd, "extension-release."+name), nil, 0o644)
		}
	}
	return nil, nil
}

// node is a test node: a root with an os-release, an image store and a
// node store, and a policy that trusts the digests in signed.
type node struct {
	t            *testing.T
	root         string
	sys          *fakeSys
	image, local *fakeStore
	signed       map[v1.Hash]bool
	policyErr    error
	out          bytes.Buffer
}

func newNode(t *testing.T) *node {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n"), 0o644)
	return &node{t: t, root: root, sys: newFakeSys(t, root), image: &fakeStore{}, local: &fakeStore{}, signed: map[v1.Hash]bool{}}
}

func (n *node) activator() *Activator {
	a := &Activator{
		Sys: n.sys.system(),
		Sources: []Source{
			{From: FromImage, Dir: store.ImageDir, Store: n.image},
			{From: FromNode, Dir: store.NodeDir, Store: n.local},
		},
		Root: n.root, Arch: sysext.SystemdArch, Out: &n.out,
		Now: func() time.Time { return time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC) },
	}
	if n.policyErr != nil {
		a.PolicyError = n.policyErr
	} else {
		a.Verify = func(art *artifact.Artifact) (string, error) {
			if n.signed[art.Digest] {
				return "sha256:0123456789abcdef", nil
			}
			return "", errors.New("no signature (sha256-….sig not found); updates must be signed by a trusted key: sha256:0123456789abcdef (image /usr/lib/slate/update-keys/01.pub)")
		}
	}
	return a
}

func (n *node) activate(entries ...string) *Report {
	n.t.Helper()
	n.out.Reset()
	n.sys.log = nil
	r := n.activator().Activate(context.Background(), entries)
	back, err := ReadReport(filepath.Join(n.root, ReportPath))
	if err != nil {
		n.t.Fatalf("report: %v", err)
	}
	if len(back.Entries) != len(r.Entries) {
		n.t.Fatalf("report on disk has %d entries, returned %d", len(back.Entries), len(r.Entries))
	}
	return r
}

var t0 = time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)

func TestActivateSelection(t *testing.T) {
	trixie := sysext.Release{ID: "debian", VersionID: "13", Architecture: sysext.SystemdArch}
	forBookworm := sysext.Release{ID: "debian", VersionID: "12", Architecture: sysext.SystemdArch}
	for _, tc := range []struct {
		name    string
		setup   func(n *node)
		entries []string
		want    []Entry // State, Name, Version, From, SignedBy compared; Reason by substring
		lines   []string
	}{{
		name: "image store",
		setup: func(n *node) {
			n.image.entries = []store.Entry{ext(t, n.root, "tools", "1.0", forBookworm, t0)}
		},
		entries: []string{"tools"},
		want:    []Entry{{Entry: "tools", Name: "tools", Version: "1.0", From: FromImage, State: Merged}},
		lines:   []string{"slate-sysext: tools 1.0 (sha256:"},
	}, {
		name: "wrong release",
		setup: func(n *node) {
			n.image.entries = []store.Entry{ext(t, n.root, "gpu", "550", trixie, t0)}
		},
		entries: []string{"gpu"},
		want: []Entry{{Entry: "gpu", Name: "gpu", Version: "550", From: FromImage, State: Refused,
			Reason: "not for this image: it is for debian VERSION_ID=13, this image is VERSION_ID=12"}},
		lines: []string{"slate-sysext: gpu refused: gpu 550 (sha256:"},
	}, {
		name: "unsigned under a signed-only policy",
		setup: func(n *node) {
			n.local.entries = []store.Entry{ext(t, n.root, "tools", "1.1", forBookworm, t0)}
		},
		entries: []string{"tools"},
		want:    []Entry{{Entry: "tools", Name: "tools", Version: "1.1", From: FromNode, State: Refused, Reason: "signature: no signature"}},
	}, {
		name: "no policy",
		setup: func(n *node) {
			n.local.entries = []store.Entry{ext(t, n.root, "tools", "1.1", forBookworm, t0)}
			n.policyErr = errors.New("update policy: update key /usr/lib/slate/update-keys/01.pub (image): not a PEM public key")
		},
		entries: []string{"tools"},
		want: []Entry{{Entry: "tools", Name: "tools", From: FromNode, Version: "1.1", State: Refused,
			Reason: "its signature cannot be checked: update policy: update key /usr/lib/slate/update-keys/01.pub"}},
	}, {
		name: "signed in the node store, by reference",
		setup: func(n *node) {
			e := ext(t, n.root, "tools", "1.1", forBookworm, t0)
			e.Ref = "registry.example/ext/tools:1.1"
			n.local.entries = []store.Entry{e}
			n.signed[e.Digest] = true
		},
		entries: []string{"registry.example/ext/tools:1.1"},
		want:    []Entry{{Entry: "registry.example/ext/tools:1.1", Name: "tools", Version: "1.1", From: FromNode, SignedBy: "sha256:0123456789abcdef", State: Merged}},
		lines:   []string{"slate-sysext: registry.example/ext/tools:1.1 (tools) 1.1 (sha256:", "merged from the node's store, signed by sha256:0123456789abcdef"},
	}, {
		name: "a corrupt image is caught by the full read",
		setup: func(n *node) {
			e := ext(t, n.root, "tools", "1.1", forBookworm, t0)
			n.local.entries = []store.Entry{e}
			n.signed[e.Digest] = true
			n.sys.corrupt["slate-ext-tools"] = 5
		},
		entries: []string{"tools"},
		want: []Entry{{Entry: "tools", Name: "tools", Version: "1.1", From: FromNode, State: Refused,
			Reason: "block 5 of tools fails dm-verity: the file on the state partition ("}},
		// Dropped from the node's store, so that fetch gets it again.
		lines: []string{"slate-sysext: removed the changed extension tools 1.1 (sha256:"},
	}, {
		name: "the newest gives way to an older one that works",
		setup: func(n *node) {
			n.image.entries = []store.Entry{ext(t, n.root, "tools", "1.0", forBookworm, t0)}
			n.local.entries = []store.Entry{ext(t, n.root, "tools", "1.1", forBookworm, t0.Add(time.Hour))} // unsigned
		},
		entries: []string{"tools"},
		want:    []Entry{{Entry: "tools", Name: "tools", Version: "1.0", From: FromImage, State: Merged, Reason: "tools 1.1 (sha256:"}},
		lines:   []string{"merged (passed over: tools 1.1 (sha256:"},
	}, {
		name: "newest matching release wins",
		setup: func(n *node) {
			n.image.entries = []store.Entry{ext(t, n.root, "tools", "1.0", forBookworm, t0), ext(t, n.root, "tools", "2.0", trixie, t0.Add(2*time.Hour))}
			e := ext(t, n.root, "tools", "1.2", forBookworm, t0.Add(time.Hour))
			n.local.entries = []store.Entry{e}
			n.signed[e.Digest] = true
		},
		entries: []string{"tools"},
		want:    []Entry{{Entry: "tools", Name: "tools", Version: "1.2", From: FromNode, SignedBy: "sha256:0123456789abcdef", State: Merged}},
	}, {
		name:    "missing",
		setup:   func(n *node) {},
		entries: []string{"tools", "registry.example/ext/gpu:550"},
		want: []Entry{
			{Entry: "tools", State: Missing, Reason: "no extension named tools in the image's store (/usr/lib/slate/extensions) or the node's store (/var/lib/slate/extensions)"},
			{Entry: "registry.example/ext/gpu:550", State: Missing, Reason: "not fetched yet"},
		},
		lines: []string{"slate-sysext: tools missing: no extension named tools", "slate-sysext: registry.example/ext/gpu:550 missing: not fetched yet"},
	}, {
		name: "two entries, one extension",
		setup: func(n *node) {
			e := ext(t, n.root, "tools", "1.0", forBookworm, t0)
			e.Ref = "registry.example/ext/tools:1.0"
			n.image.entries = []store.Entry{e}
		},
		entries: []string{"tools", "registry.example/ext/tools:1.0"},
		want: []Entry{
			{Entry: "tools", Name: "tools", Version: "1.0", From: FromImage, State: Merged},
			{Entry: "registry.example/ext/tools:1.0", Name: "tools", Version: "1.0", From: FromImage, State: Refused, Reason: "extension tools is merged for the entry tools already"},
		},
	}, {
		name: "no systemd-sysext",
		setup: func(n *node) {
			n.image.entries = []store.Entry{ext(t, n.root, "tools", "1.0", forBookworm, t0)}
			n.sys.noSysext = true
		},
		entries: []string{"tools"},
		want:    []Entry{{Entry: "tools", Name: "tools", Version: "1.0", From: FromImage, State: Refused, Reason: "verified and mounted at /run/extensions/tools, but not merged: this image has no systemd-sysext"}},
		lines:   []string{"slate-sysext: this image has no systemd-sysext"},
	}, {
		name: "systemd-sysext skips it",
		setup: func(n *node) {
			n.image.entries = []store.Entry{ext(t, n.root, "tools", "1.0", forBookworm, t0)}
			n.sys.notMerged["tools"] = true
		},
		entries: []string{"tools"},
		want:    []Entry{{Entry: "tools", Name: "tools", Version: "1.0", From: FromImage, State: Refused, Reason: "systemd-sysext did not merge it (no /usr/lib/extension-release.d/extension-release.tools after the refresh"}},
	}, {
		name: "refresh fails",
		setup: func(n *node) {
			n.image.entries = []store.Entry{ext(t, n.root, "tools", "1.0", forBookworm, t0)}
			n.sys.refreshErr = errors.New("exit status 1")
		},
		entries: []string{"tools"},
		want:    []Entry{{Entry: "tools", Name: "tools", Version: "1.0", From: FromImage, State: Refused, Reason: "not merged: systemd-sysext refresh failed (exit status 1)"}},
		lines:   []string{"slate-sysext: systemd-sysext refresh failed: exit status 1: Failed to merge: Device or resource busy"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			tc.setup(n)
			r := n.activate(tc.entries...)
			if r.Host != bookworm || r.Error != "" {
				t.Errorf("host %v, error %q", r.Host, r.Error)
			}
			if len(r.Entries) != len(tc.want) {
				t.Fatalf("entries %+v", r.Entries)
			}
			for i, w := range tc.want {
				g := r.Entries[i]
				if g.Entry != w.Entry || g.State != w.State || g.Name != w.Name || g.Version != w.Version || g.From != w.From || g.SignedBy != w.SignedBy {
					t.Errorf("entry %d: %+v\nwant %+v", i, g, w)
				}
				if !strings.Contains(g.Reason, w.Reason) || (w.Reason == "" && g.Reason != "") {
					t.Errorf("entry %d: reason %q, want %q", i, g.Reason, w.Reason)
				}
				mounted := n.sys.mounted[filepath.Join(n.root, RunDir, g.Name)] != ""
				if g.State == Merged && (!mounted || n.sys.dm[DMPrefix+g.Name] == "" || g.Path != "/run/extensions/"+g.Name || g.Device != "/dev/mapper/slate-ext-"+g.Name) {
					t.Errorf("%s merged but mounted %v, dm %q, path %q, device %q", g.Name, mounted, n.sys.dm[DMPrefix+g.Name], g.Path, g.Device)
				}
			}
			for _, l := range tc.lines {
				if !strings.Contains(n.out.String(), l) {
					t.Errorf("console lacks %q:\n%s", l, n.out.String())
				}
			}
			if got := strings.Count(n.out.String(), "\n"); got != len(r.Entries)+len(r.Notes) {
				t.Errorf("%d console lines for %d entries and %d notes:\n%s", got, len(r.Entries), len(r.Notes), n.out.String())
			}
			if len(n.sys.openLoop) != 0 {
				t.Errorf("loop devices left open: %v", n.sys.openLoop)
			}
			// Whatever was refused left no device behind.
			for name := range n.sys.dm {
				if !slices.ContainsFunc(r.Entries, func(e Entry) bool { return DMPrefix+e.Name == name && e.Device != "" }) {
					t.Errorf("dm device %s left behind", name)
				}
			}
		})
	}
}

// The verity table is the format of a root slot, over the loop device.
func TestVerityTable(t *testing.T) {
	n := newNode(t)
	e := ext(t, n.root, "tools", "1.0", sysext.Release{ID: "debian", VersionID: "12"}, t0)
	e.Config.Image.Salt = "abcd"
	n.image.entries = []store.Entry{e}
	n.activate("tools")
	l := e.Config.Image
	want := fmt.Sprintf("0 %d verity 1 /dev/loop0 /dev/loop0 4096 4096 8 9 sha256 %s abcd", l.DataSize/512, l.RootHash)
	if got := n.sys.dm["slate-ext-tools"]; got != want {
		t.Errorf("table\n%s\nwant\n%s", got, want)
	}
	if want := []string{"attach " + e.Digest.Hex, "dm create slate-ext-tools", "mount /run/extensions/tools", "systemd-sysext refresh"}; !slices.Equal(n.sys.log, want) {
		t.Errorf("steps %q, want %q", n.sys.log, want)
	}
}

// An extension no longer named is unmounted and its device removed, after
// systemd-sysext let go of it; one that did not change is kept as it is.
func TestTeardown(t *testing.T) {
	n := newNode(t)
	rel := sysext.Release{ID: "debian", VersionID: "12"}
	tools := ext(t, n.root, "tools", "1.0", rel, t0)
	gpu := ext(t, n.root, "gpu", "550", rel, t0)
	n.image.entries = []store.Entry{tools, gpu}
	r := n.activate("tools", "gpu")
	if got := r.Merged(); !slices.Equal(got, []string{"gpu", "tools"}) {
		t.Fatalf("merged %v", got)
	}

	r = n.activate("tools")
	want := []string{"systemd-sysext unmerge", "umount /run/extensions/gpu", "dm remove slate-ext-gpu", "systemd-sysext refresh"}
	if !slices.Equal(n.sys.log, want) {
		t.Errorf("steps %q, want %q", n.sys.log, want)
	}
	if got := r.Merged(); !slices.Equal(got, []string{"tools"}) {
		t.Errorf("merged %v", got)
	}
	if _, err := os.Stat(filepath.Join(n.root, RunDir, "gpu")); !os.IsNotExist(err) {
		t.Errorf("/run/extensions/gpu: %v", err)
	}
	if !slices.ContainsFunc(r.Notes, func(s string) bool {
		return strings.Contains(s, "extension gpu is no longer named: unmounted and its device removed")
	}) {
		t.Errorf("notes %q", r.Notes)
	}

	// A newer tools replaces the active one: down, then up.
	tools2 := ext(t, n.root, "tools", "1.1", rel, t0.Add(time.Hour))
	n.image.entries = append(n.image.entries, tools2)
	r = n.activate("tools")
	want = []string{"systemd-sysext unmerge", "umount /run/extensions/tools", "dm remove slate-ext-tools",
		"attach " + tools2.Digest.Hex, "dm create slate-ext-tools", "mount /run/extensions/tools", "systemd-sysext refresh"}
	if !slices.Equal(n.sys.log, want) {
		t.Errorf("steps %q, want %q", n.sys.log, want)
	}
	if e := r.Find("tools"); e == nil || e.State != Merged || e.Version != "1.1" {
		t.Errorf("tools: %+v", e)
	}
	// Nothing named: everything goes, and systemd-sysext merges what else it has.
	r = n.activate()
	want = []string{"systemd-sysext unmerge", "umount /run/extensions/tools", "dm remove slate-ext-tools", "systemd-sysext refresh"}
	if !slices.Equal(n.sys.log, want) || len(n.sys.dm) != 0 || len(n.sys.mounted) != 0 {
		t.Errorf("steps %q, dm %v, mounts %v", n.sys.log, n.sys.dm, n.sys.mounted)
	}
	// And with nothing named and nothing active, systemd-sysext is left alone.
	n.activate()
	if len(n.sys.log) != 0 {
		t.Errorf("steps %q", n.sys.log)
	}
}

// systemd-sysext merges /var/lib/extensions unverified: it is hidden when
// it holds anything, and the report says so.
func TestHideVarLib(t *testing.T) {
	n := newNode(t)
	os.MkdirAll(filepath.Join(n.root, VarLibDir), 0o755)
	n.activate()
	if len(n.sys.hidden) != 0 {
		t.Errorf("an empty %s hidden", VarLibDir)
	}
	os.WriteFile(filepath.Join(n.root, VarLibDir, "evil.raw"), []byte("x"), 0o644)
	r := n.activate()
	if !slices.Equal(n.sys.hidden, []string{VarLibDir}) {
		t.Errorf("hidden %v", n.sys.hidden)
	}
	if len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "/var/lib/extensions holds evil.raw: hidden under an empty read-only directory") {
		t.Errorf("notes %q", r.Notes)
	}
	if !strings.Contains(n.out.String(), "slate-sysext: /var/lib/extensions holds evil.raw") {
		t.Errorf("console: %s", n.out.String())
	}
}

// Without an os-release nothing can be matched: every entry is refused,
// and the activation still ends with a report.
func TestNoOSRelease(t *testing.T) {
	n := newNode(t)
	os.Remove(filepath.Join(n.root, "etc/os-release"))
	n.image.entries = []store.Entry{ext(t, n.root, "tools", "1.0", bookworm, t0)}
	r := n.activate("tools")
	if !strings.Contains(r.Error, "no os-release to match extensions against") || r.Entries[0].State != Refused {
		t.Errorf("%+v", r)
	}
	// /usr/lib/os-release stands in, as for systemd-sysext.
	os.MkdirAll(filepath.Join(n.root, "usr/lib"), 0o755)
	os.WriteFile(filepath.Join(n.root, "usr/lib/os-release"), []byte("ID=debian\nVERSION_ID=12\n"), 0o644)
	if r := n.activate("tools"); r.Error != "" || r.Entries[0].State != Merged {
		t.Errorf("%+v", r)
	}
}

// An unreadable store is a note; the other store still counts.
func TestStoreUnreadable(t *testing.T) {
	n := newNode(t)
	n.local.listErr = errors.New("index.json: unexpected end of JSON input")
	n.image.entries = []store.Entry{ext(t, n.root, "tools", "1.0", bookworm, t0)}
	r := n.activate("tools")
	if r.Entries[0].State != Merged || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "extension store /var/lib/slate/extensions is unreadable: index.json") {
		t.Errorf("%+v", r)
	}
}

// A reference this boot's fetch refused is refused with the fetch's reason.
func TestMissingSaysWhyFetchRefused(t *testing.T) {
	n := newNode(t)
	const unsigned, other, later = "registry.example/ext/unsigned:1", "registry.example/ext/other:1", "registry.example/ext/later:1"
	if err := WriteFetchResults(filepath.Join(n.root, FetchResultsPath), []FetchResult{
		{Entry: unsigned, State: FetchRefused, Reason: "no signature; updates must be signed by a trusted key"},
		{Index: 1, Entry: other, State: NoMatch, Reason: "nothing it offers is for ID=debian VERSION_ID=12: it offers other 1 for ID=debian VERSION_ID=99"},
	}); err != nil {
		t.Fatal(err)
	}
	r := n.activate(unsigned, other, later)
	for i, want := range []struct {
		state State
		why   string
	}{{Refused, "slate sysext fetch: refused: no signature"}, {Refused, "slate sysext fetch: no match: nothing it offers"}, {Missing, "not fetched yet"}} {
		if e := r.Entries[i]; e.State != want.state || !strings.Contains(e.Reason, want.why) {
			t.Errorf("%s: %s %q, want %s saying %q", e.Entry, e.State, e.Reason, want.state, want.why)
		}
	}
}
