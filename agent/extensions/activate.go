package extensions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/internal/jsonduration"
	"github.com/slate-os/slate/sysext"
	"github.com/slate-os/slate/sysext/store"
)

// Paths activation works with, absolute on the node (under Activator.Root).
const (
	// RunDir is where extensions are mounted for systemd-sysext, one
	// directory each: /run/extensions/NAME.
	RunDir = "/run/extensions"
	// VarLibDir is the directory systemd-sysext merges from the state
	// partition, which nothing verifies: hidden when it holds anything.
	VarLibDir = "/var/lib/extensions"
	// DMPrefix starts the name of every dm-verity device activation makes:
	// slate-ext-NAME.
	DMPrefix = "slate-ext-"
	// SystemdSysext is the command that merges.
	SystemdSysext = "systemd-sysext"
)

// readChunk is the size of the reads through a new dm-verity device.
const readChunk = 1 << 20

// Loops attaches files to loop devices.
type Loops interface {
	// Attach attaches file, read-only and with autoclear, to a free loop
	// device. The device stays attached while the Loop is open or
	// something else (the dm-verity device) holds it: close it once the
	// dm device holds it, and the kernel detaches the loop device when
	// the dm device is removed.
	Attach(file string) (Loop, error)
}

// Loop is an attached loop device.
type Loop interface {
	// Path is the device node: /dev/loopN.
	Path() string
	Close() error
}

// Mapper is device-mapper.
type Mapper interface {
	// CreateVerity creates the read-only device name with one verity
	// target of sectors 512-byte sectors and the table's parameters, and
	// returns its node (/dev/mapper/NAME).
	CreateVerity(name string, sectors uint64, table string) (string, error)
	// Remove removes the device name and its node.
	Remove(name string) error
	// List names the devices whose names start with prefix.
	List(prefix string) ([]string, error)
	// Open opens a device to read it.
	Open(dev string) (io.ReadCloser, error)
}

// Mounter mounts.
type Mounter interface {
	// Mount mounts the squashfs on dev at dir: read-only, nodev, nosuid.
	Mount(dev, dir string) error
	Unmount(dir string) error
	// Mounted says whether something is mounted at dir.
	Mounted(dir string) (bool, error)
	// Hide mounts an empty read-only directory over dir.
	Hide(dir string) error
}

// Runner runs commands.
type Runner interface {
	// LookPath finds a command as exec.LookPath does.
	LookPath(name string) (string, error)
	// Run runs a command and returns its combined output.
	Run(ctx context.Context, path string, args ...string) ([]byte, error)
}

// System is everything activation does to the node (Linux: NewSystem).
type System struct {
	Loops  Loops
	DM     Mapper
	Mounts Mounter
	Exec   Runner
}

// Store is a store of extensions (*store.Store).
type Store interface {
	List() ([]store.Entry, error)
	Artifact(d v1.Hash) (*artifact.Artifact, error)
}

var _ Store = (*store.Store)(nil)

// Source is a store activation takes candidates from.
type Source struct {
	// From is FromImage (the image's store: trusted as the root is, never
	// signature-checked) or FromNode (the node's store: every candidate
	// signature-checked with Activator.Verify).
	From string
	// Dir is the store's directory, for messages.
	Dir   string
	Store Store
}

// Activator activates the extensions a node config names.
type Activator struct {
	Sys     System
	Sources []Source
	// Verify checks a node-store extension's signature with the update
	// policy and returns the ID of the key that signed it ("" when the
	// policy lets unsigned extensions in and none did). Nil refuses every
	// node-store extension, with PolicyError as the reason.
	Verify      func(*artifact.Artifact) (signedBy string, err error)
	PolicyError error
	// Root is the node's root ("/"; a directory in tests): os-release,
	// RunDir, VarLibDir, ReportPath and /usr are under it.
	Root string
	// Arch is the node's architecture in systemd's naming (sysext.SystemdArch).
	Arch string
	// Out gets one line per entry and per note ("slate-sysext: ...").
	Out io.Writer
	Now func() time.Time
}

// cand is a candidate extension and the store it is in.
type cand struct {
	store.Entry
	src *Source
}

// plan is one node-config entry on its way through activation.
type plan struct {
	entry   string
	related []cand // every candidate the entry names, any release
	pool    []cand // those not tried yet
	cur     *cand  // the candidate being activated
	passed  []string
	final   []string // why the last candidates did not match the release
	signed  string
	keep    bool
	rep     Entry
}

// Activate activates entries (the node config's extensions), tears down
// what was activated before and is no longer named, merges with
// systemd-sysext, prints a line per entry, and writes the report
// (ReportPath under Root), which it returns. It never fails: what went
// wrong is in the report.
func (a *Activator) Activate(ctx context.Context, entries []string) *Report {
	now := a.Now
	if now == nil {
		now = time.Now
	}
	if a.Out == nil {
		a.Out = io.Discard
	}
	start := now()
	r := &Report{Time: start.UTC(), Architecture: a.Arch, Entries: []Entry{}}
	note := func(format string, args ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, args...)) }
	prev, _ := ReadReport(a.path(ReportPath)) // none on a fresh boot

	host, hostErr := a.hostRelease()
	r.Host = host
	if hostErr != nil {
		r.Error = hostErr.Error()
	}
	sysextPath, lookErr := a.Sys.Exec.LookPath(SystemdSysext)
	r.SystemdSysext = sysextPath

	cands := a.candidates(note)
	a.hideVarLib(note)

	active := map[string]bool{}
	names, err := a.Sys.DM.List(DMPrefix)
	if err != nil {
		note("listing device-mapper devices: %v", err)
	}
	for _, n := range names {
		active[strings.TrimPrefix(n, DMPrefix)] = true
	}

	// Choose, check signatures: nothing on the node changes yet.
	claimed := map[string]string{} // extension name -> entry
	plans := make([]*plan, 0, len(entries))
	for _, e := range entries {
		p := &plan{entry: e, rep: Entry{Entry: e}}
		plans = append(plans, p)
		if slices.ContainsFunc(plans[:len(plans)-1], func(o *plan) bool { return o.entry == e }) {
			p.rep.State, p.rep.Reason = Refused, "named twice in the node config's extensions"
			continue
		}
		if hostErr != nil {
			p.rep.State, p.rep.Reason = Refused, hostErr.Error()
			continue
		}
		p.related = related(cands, e)
		p.pool = slices.Clone(p.related)
		if a.next(p, host, claimed) {
			claimed[p.cur.Config.Name] = e
			p.keep = a.unchanged(prev, p.cur, active[p.cur.Config.Name])
		}
	}

	// Tear down what is no longer named, or changed.
	keep := map[string]bool{}
	for _, p := range plans {
		if p.cur != nil && p.keep {
			keep[p.cur.Config.Name] = true
		}
	}
	var gone []string
	for n := range active {
		if !keep[n] {
			gone = append(gone, n)
		}
	}
	slices.Sort(gone)
	if len(gone) > 0 && sysextPath != "" {
		// An overlay holds its lower directories: unmount them only
		// once systemd-sysext has let go.
		if out, err := a.Sys.Exec.Run(ctx, sysextPath, "unmerge"); err != nil {
			note("systemd-sysext unmerge: %v: %s", err, oneLine(out))
		}
	}
	for _, n := range gone {
		if err := a.teardown(n); err != nil {
			note("removing extension %s: %v", n, err)
		} else if !slices.ContainsFunc(plans, func(p *plan) bool { return p.cur != nil && p.cur.Config.Name == n }) {
			note("extension %s is no longer named: unmounted and its device removed", n)
		}
	}

	// Set up: loop, dm-verity, a full read, the mount; a candidate that
	// fails gives way to the next.
	mounted := 0
	for _, p := range plans {
		for p.cur != nil {
			if p.keep {
				break
			}
			err := a.setup(ctx, p.cur)
			if err == nil {
				break
			}
			p.passed = append(p.passed, fmt.Sprintf("%s: %v", p.cur.Entry, err))
			if errors.Is(err, ErrChanged) {
				a.discard(p.cur, note)
			}
			delete(claimed, p.cur.Config.Name)
			if a.next(p, host, claimed) {
				claimed[p.cur.Config.Name] = p.entry
			}
		}
		if p.cur != nil {
			mounted++
		}
	}

	// Merge.
	var mergeErr error
	switch {
	case mounted == 0 && len(gone) == 0:
	case lookErr != nil:
		mergeErr = fmt.Errorf("this image has no %s", SystemdSysext)
		note("this image has no %s (%v): the extensions are verified and mounted under %s, but nothing merges them into /usr", SystemdSysext, lookErr, RunDir)
	default:
		if out, err := a.Sys.Exec.Run(ctx, sysextPath, "refresh"); err != nil {
			note("systemd-sysext refresh failed: %v: %s", err, oneLine(out))
			mergeErr = fmt.Errorf("systemd-sysext refresh failed (%v)", err)
		}
	}

	for _, p := range plans {
		a.finish(p, mergeErr)
		r.Entries = append(r.Entries, p.rep)
	}
	a.foreign(plans, note)
	r.Took = jsonduration.Duration(now().Sub(start))
	for _, e := range r.Entries {
		fmt.Fprintf(a.Out, "slate-sysext: %s\n", e.Line())
	}
	for _, n := range r.Notes {
		fmt.Fprintf(a.Out, "slate-sysext: %s\n", n)
	}
	if r.Error != "" {
		fmt.Fprintf(a.Out, "slate-sysext: %s\n", r.Error)
	}
	if err := r.Write(a.path(ReportPath)); err != nil {
		fmt.Fprintf(a.Out, "slate-sysext: writing the report: %v\n", err)
	}
	return r
}

// finish fills p's report entry.
func (a *Activator) finish(p *plan, mergeErr error) {
	e := &p.rep
	if e.State != "" {
		return // refused before anything was chosen
	}
	if p.cur == nil {
		if len(p.related) == 0 {
			e.State, e.Reason = a.missing(p.entry)
			return
		}
		newest := p.related[0]
		for _, c := range p.related[1:] {
			if c.Added.After(newest.Added) {
				newest = c
			}
		}
		a.describe(e, newest)
		e.State, e.Reason = Refused, strings.Join(append(p.passed, p.final...), "; ")
		return
	}
	c := p.cur
	a.describe(e, *c)
	e.SignedBy = p.signed
	e.Path = RunDir + "/" + c.Config.Name
	e.Device = "/dev/mapper/" + DMPrefix + c.Config.Name
	e.RootHash = c.Config.Image.RootHash
	e.Reason = strings.Join(p.passed, "; ")
	switch {
	case mergeErr != nil:
		e.State, e.Reason = Refused, fmt.Sprintf("verified and mounted at %s, but not merged: %v", e.Path, mergeErr)
	default:
		rel := "/" + sysext.ReleasePath(c.Config.Name)
		if _, err := os.Stat(a.path(rel)); err != nil {
			e.State, e.Reason = Refused, fmt.Sprintf("verified and mounted at %s, but systemd-sysext did not merge it (no %s after the refresh; see journalctl -u slate-sysext)", e.Path, rel)
			return
		}
		e.State = Merged
	}
}

func (a *Activator) describe(e *Entry, c cand) {
	e.Name, e.Version, e.Digest = c.Config.Name, c.Config.Version, c.Digest.String()
	e.Release, e.From = c.Config.Release.String(), c.src.From
}

// missing says why no store has the entry: Missing, or Refused when this
// boot's fetch found it and refused it (unsigned, no build for this release).
func (a *Activator) missing(entry string) (State, string) {
	if nodeconfig.IsExtensionRef(entry) {
		if r, ok := readFetchResults(a.path(FetchResultsPath))[entry]; ok && !r.OK() {
			why := "slate sysext fetch: " + string(r.State)
			if r.Reason != "" {
				why += ": " + r.Reason
			}
			if r.State == FetchRefused || r.State == NoMatch {
				return Refused, why
			}
			return Missing, why
		}
		return Missing, "not fetched yet: slate-sysext-fetch.service fetches it once the network is up (slate sysext fetch)"
	}
	var dirs []string
	for _, s := range a.Sources {
		dirs = append(dirs, fmt.Sprintf("the %s's store (%s)", map[string]string{FromImage: "image", FromNode: "node"}[s.From], s.Dir))
	}
	return Missing, fmt.Sprintf("no extension named %s in %s", entry, strings.Join(dirs, " or "))
}

// next moves p to its next usable candidate: Select's choice among those
// not tried, checked (config, name, image file, signature). It says
// whether there is one; when not, p.final says why the rest did not match.
func (a *Activator) next(p *plan, host sysext.Release, claimed map[string]string) bool {
	p.cur, p.signed = nil, ""
	for {
		entries := make([]store.Entry, len(p.pool))
		for i, c := range p.pool {
			entries[i] = c.Entry
		}
		e, why, ok := store.Select(entries, p.entry, host, a.Arch)
		if !ok {
			p.final = why
			return false
		}
		i := slices.IndexFunc(p.pool, func(c cand) bool { return c.Digest == e.Digest })
		c := p.pool[i]
		p.pool = slices.Delete(p.pool, i, i+1)
		signed, err := a.check(c, p.entry, claimed)
		if err != nil {
			p.passed = append(p.passed, fmt.Sprintf("%s: %v", c.Entry, err))
			continue
		}
		p.cur, p.signed = &c, signed
		return true
	}
}

// check decides whether c may be activated, before anything is done with
// it; for a node-store extension it returns the key that signed it.
func (a *Activator) check(c cand, entry string, claimed map[string]string) (string, error) {
	cfg := c.Config
	if probs := cfg.Check(); len(probs) > 0 {
		return "", fmt.Errorf("its config is invalid: %s", strings.Join(probs, "; "))
	}
	if other, ok := claimed[cfg.Name]; ok && other != entry {
		return "", fmt.Errorf("extension %s is merged for the entry %s already", cfg.Name, other)
	}
	if n := len(DMPrefix + cfg.Name); n >= 128 {
		return "", fmt.Errorf("its name is too long for a device-mapper device (%s%s, %d characters; at most 127)", DMPrefix, cfg.Name, n)
	}
	l := cfg.Image
	if l.DataBlockSize != verity.BlockSize || l.HashBlockSize != verity.BlockSize {
		return "", fmt.Errorf("its verity blocks are %d/%d bytes, slate reads %d", l.DataBlockSize, l.HashBlockSize, verity.BlockSize)
	}
	fi, err := os.Stat(c.ImagePath)
	if err != nil {
		return "", fmt.Errorf("its image: %w", err)
	}
	if fi.Size() != l.Size {
		return "", fmt.Errorf("its image %s is %d bytes, its config says %d: the file on the state partition was changed", c.ImagePath, fi.Size(), l.Size)
	}
	if c.src.From == FromImage {
		return "", nil
	}
	if a.Verify == nil {
		why := a.PolicyError
		if why == nil {
			why = errors.New("no update policy")
		}
		return "", fmt.Errorf("its signature cannot be checked: %v", why)
	}
	art, err := c.src.Store.Artifact(c.Digest)
	if err != nil {
		return "", fmt.Errorf("reading it from %s: %w", c.src.Dir, err)
	}
	signed, err := a.Verify(art)
	if err != nil {
		return "", fmt.Errorf("signature: %w", err)
	}
	return signed, nil
}

// unchanged says whether c is active already, as the previous activation
// left it: same digest and root hash, its device and mount still there.
func (a *Activator) unchanged(prev *Report, c *cand, dmActive bool) bool {
	if prev == nil || !dmActive {
		return false
	}
	i := slices.IndexFunc(prev.Entries, func(e Entry) bool {
		return e.Name == c.Config.Name && e.Device != "" && e.Digest == c.Digest.String() && e.RootHash == c.Config.Image.RootHash
	})
	if i < 0 {
		return false
	}
	m, err := a.Sys.Mounts.Mounted(a.path(RunDir + "/" + c.Config.Name))
	return err == nil && m
}

// setup attaches, verifies and mounts c.
func (a *Activator) setup(ctx context.Context, c *cand) error {
	name := c.Config.Name
	l := c.Config.Image
	loop, err := a.Sys.Loops.Attach(c.ImagePath)
	if err != nil {
		return fmt.Errorf("loop device for %s: %w", c.ImagePath, err)
	}
	dmName := DMPrefix + name
	table := verity.Table(loop.Path(), loop.Path(), uint64(l.DataSize/verity.BlockSize), uint64(l.HashOffset/verity.BlockSize+1), l.RootHash, l.Salt)
	dev, err := a.Sys.DM.CreateVerity(dmName, uint64(l.DataSize/512), table)
	loop.Close() // the dm device holds it now; without one, it detaches
	if err != nil {
		return fmt.Errorf("dm-verity over %s: %w", loop.Path(), err)
	}
	removeDM := func() {
		if err := a.Sys.DM.Remove(dmName); err != nil {
			fmt.Fprintf(a.Out, "slate-sysext: removing %s: %v\n", dmName, err)
		}
	}
	if err := a.readAll(ctx, dev, c); err != nil {
		removeDM()
		return err
	}
	dir := a.path(RunDir + "/" + name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		removeDM()
		return err
	}
	if err := a.Sys.Mounts.Mount(dev, dir); err != nil {
		removeDM()
		os.Remove(dir)
		return fmt.Errorf("mounting %s at %s: %w", dev, RunDir+"/"+name, err)
	}
	return nil
}

// ErrChanged wraps the error of an extension whose image no longer
// matches its root hash.
var ErrChanged = errors.New("changed on disk")

// Pruner is a store that can drop extensions (*store.Store): a node-store
// extension whose image was changed on disk is removed, so that
// slate-sysext-fetch fetches it again instead of finding it present.
type Pruner interface {
	Prune(keep func(store.Entry) bool) ([]store.Entry, error)
}

// discard removes a changed extension from a node store that can drop it.
func (a *Activator) discard(c *cand, note func(string, ...any)) {
	p, ok := c.src.Store.(Pruner)
	if c.src.From != FromNode || !ok {
		return
	}
	if _, err := p.Prune(func(e store.Entry) bool { return e.Digest != c.Digest }); err != nil {
		note("removing the changed extension %s from %s: %v", c.Entry, c.src.Dir, err)
		return
	}
	note("removed the changed extension %s from %s: the agent fetches it again where the node config names a reference", c.Entry, c.src.Dir)
}

// readAll reads the whole verity device once, so that every block is
// checked against the root hash now rather than when a program first
// touches it: a changed byte is an I/O error here.
func (a *Activator) readAll(ctx context.Context, dev string, c *cand) error {
	f, err := a.Sys.DM.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, readChunk)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := f.Read(buf)
		off += int64(n)
		if err == io.EOF {
			break
		}
		if errors.Is(err, syscall.EIO) {
			where := "the file on the state partition"
			if c.src.From == FromImage {
				where = "the file in the image"
			}
			return fmt.Errorf("%w: block %d of %s fails dm-verity: %s (%s) was changed", ErrChanged, off/verity.BlockSize, c.Config.Name, where, c.ImagePath)
		}
		if err != nil {
			return fmt.Errorf("reading %s at byte %d: %w", dev, off, err)
		}
	}
	if off != c.Config.Image.DataSize {
		return fmt.Errorf("%s is %d bytes, the extension's data %d", dev, off, c.Config.Image.DataSize)
	}
	return nil
}

// teardown unmounts extension name and removes its device.
func (a *Activator) teardown(name string) error {
	dir := a.path(RunDir + "/" + name)
	m, err := a.Sys.Mounts.Mounted(dir)
	if err != nil {
		return err
	}
	if m {
		if err := a.Sys.Mounts.Unmount(dir); err != nil {
			return fmt.Errorf("unmounting %s: %w", RunDir+"/"+name, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return a.Sys.DM.Remove(DMPrefix + name)
}

// candidates lists every store's extensions; a digest in two stores is
// taken from the first (the image's, which needs no signature).
func (a *Activator) candidates(note func(string, ...any)) []cand {
	var out []cand
	seen := map[v1.Hash]bool{}
	for i := range a.Sources {
		s := &a.Sources[i]
		es, err := s.Store.List()
		if err != nil {
			note("extension store %s is unreadable: %v", s.Dir, err)
			continue
		}
		for _, e := range es {
			if !seen[e.Digest] {
				seen[e.Digest] = true
				out = append(out, cand{Entry: e, src: s})
			}
		}
	}
	return out
}

// related are the candidates an entry names, by Select's rule.
func related(cands []cand, entry string) []cand {
	isRef := nodeconfig.IsExtensionRef(entry)
	var out []cand
	for _, c := range cands {
		if (isRef && c.Ref == entry) || (!isRef && c.Config.Name == entry) {
			out = append(out, c)
		}
	}
	return out
}

// HostRelease reads the os-release of the OS at root ("/": the running
// one) as systemd-sysext does: /etc/os-release, else /usr/lib/os-release.
func HostRelease(root string) (sysext.Release, error) {
	return (&Activator{Root: root}).hostRelease()
}

func (a *Activator) hostRelease() (sysext.Release, error) {
	var errs []string
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := os.ReadFile(a.path(p))
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		r, _, err := sysext.ParseRelease(b)
		if err != nil {
			return sysext.Release{}, fmt.Errorf("%s: %w", p, err)
		}
		return r, nil
	}
	return sysext.Release{}, fmt.Errorf("no os-release to match extensions against: %s", strings.Join(errs, "; "))
}

// hideVarLib hides VarLibDir under an empty read-only directory when it
// holds anything: systemd-sysext would merge it unverified.
func (a *Activator) hideVarLib(note func(string, ...any)) {
	dir := a.path(VarLibDir)
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(des) == 0) {
		return
	}
	if err != nil {
		note("%s: %v", VarLibDir, err)
		return
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	if err := a.Sys.Mounts.Hide(dir); err != nil {
		note("%s holds %s and could not be hidden (%v): systemd-sysext merges it unverified", VarLibDir, strings.Join(names, ", "), err)
		return
	}
	note("%s holds %s: hidden under an empty read-only directory, so that only verified extensions the node config names are merged", VarLibDir, strings.Join(names, ", "))
}

// foreign notes what is in RunDir that activation did not put there:
// systemd-sysext merges it too, unverified.
func (a *Activator) foreign(plans []*plan, note func(string, ...any)) {
	des, _ := os.ReadDir(a.path(RunDir))
	for _, de := range des {
		if !slices.ContainsFunc(plans, func(p *plan) bool { return p.cur != nil && p.cur.Config.Name == de.Name() }) {
			note("%s/%s was not put there by slate: systemd-sysext merges it unverified", RunDir, de.Name())
		}
	}
}

func (a *Activator) path(p string) string {
	root := a.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, p)
}

// oneLine is a command's output on one line, capped.
func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}
