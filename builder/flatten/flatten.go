// Package flatten turns an OCI image into the tar stream of its root
// filesystem: every blob checked against its descriptor as it is read, the
// layers applied by the OCI image-layer rules, and what the image may expand
// to bounded. It replaces go-containerregistry's mutate.Extract, which wrote
// a valid tar trailer before the error that stopped it (so a reader saw a
// short, clean archive), trusted a layout's blobs as they lay on disk, had
// no bound, and bent the layer rules (first entry of a duplicated name
// kept, whiteouts not normalized, unsafe entries dropped without a word).
//
// # What is checked
//
// The manifest read must hash to the image's digest (builder/source checks a
// layout's manifest against its index), the config to the manifest's config
// descriptor. Each layer's compressed bytes are hashed as
// they are read, counted against the manifest's descriptor (layer i is
// Layers[i] of the manifest, not what layer.Digest() computes), and its
// uncompressed bytes hashed against the config's rootfs.diff_ids[i] (a
// docker-save archive names no layer digests: its layers are read
// uncompressed and checked against the diff_ids alone). The
// compression (gzip, zstd or none) is told by the content; the diff_id
// checks whatever was decompressed. Both digests are compared at the layer's
// end, so bytes of a bad layer may already be in the stream; the stream then
// ends with an error instead of a tar trailer, the consumer fails, and
// Stream returns the layer's error: an image the checks refuse never makes a
// build. Any read or decompression error is an error naming the layer's
// digest and, where known, the entry. Options.Upper, layers made by the
// caller, are read uncompressed and not checked (there is nothing to check
// them against).
//
// # The layer rules (image-spec layer.md)
//
//   - Names are normalized: path.Clean, then leading "/" stripped, so
//     "./etc/x", "/etc/x" and "etc//x/" are one path. A name that climbs out
//     of the root ("../x") is an error naming the layer and the entry; so is
//     a hard link whose target does. A hard link's target is normalized as a
//     name is ("/usr/bin/a" is "usr/bin/a"). A symbolic link's target is
//     data and may point anywhere.
//   - A layer's whiteouts (.wh.NAME hides NAME and all under it) and opaque
//     markers (DIR/.wh..wh..opq hides all under DIR) apply to the lower
//     layers only, before the layer's own entries, wherever they stand in
//     its tar. Neither ships. A whiteout that names no file (".wh.",
//     ".wh..", ".wh...") or a .wh. name used as a directory is an error;
//     AUFS's bookkeeping (.wh..wh.* other than the opaque marker) is
//     skipped, as Docker and containerd skip it.
//   - An entry replaces what is at its path (a directory over a directory
//     only replaces its attributes); a name twice in one layer: the last
//     entry wins, as tar extraction does.
//   - An entry whose parent is, at that point, not a directory (a file, or
//     a symbolic link such as a merged-/usr "lib") is an error: tar
//     extraction fails there, and following a symbolic link would let a
//     layer write where its names do not say. So is a whiteout under a
//     symbolic link (an extractor would follow it and hide what the
//     whiteout does not name); under a file, a whiteout hides nothing.
//   - Directories the layers imply (parents no entry gives) are there as
//     in extraction: tar2sqfs makes them with its defaults, and the stream
//     carries those that nothing is left under (Options.ModTime).
//   - A hard link is to the file its target names when the link is applied,
//     in its own layer or a lower one. It keeps that file when the target is
//     later whited out or replaced, as on a real filesystem; the stream then
//     carries the file's data under the link's name. A target that does not
//     exist or is a directory is an error.
//   - Sparse entries (GNU 'S' or PAX GNU.sparse.*) are refused: the image
//     spec says they should not be used, no image builder writes them, and a
//     few bytes of one declare any size.
//   - PAX global headers are metadata, not entries, and are skipped.
//
// # Bound
//
// Every uncompressed byte read, in all layers, counts against a bound: four
// times disk.slotSize (Options.SlotSize) when the spec sets it, else
// DefaultBound. An entry's declared size counts before any byte of it is
// read. Four times, not once: the slot holds the compressed squashfs, and a
// root's tar is typically 2 to 3 times its squashfs (the reference image:
// 290 MB of tar, a 113 MB squashfs), so a bound of one slot would refuse
// roots that fit; the build's final check against the slot stays exact.
// The bound is there so that no layer makes a build run for ever.
//
// # Streaming, and the last entry winning
//
// The root is never unpacked to disk and memory holds only names. Stream
// first tries one pass, top layer first (what an upper layer decided stays
// decided, as in mutate.Extract), which costs what mutate.Extract did.
// That pass cannot take back what it emitted, so it gives up when the image
// needs what comes later in a layer: a name twice in one layer, a hard link
// other than to an earlier entry of its own layer that is in the root, or a
// non-directory where some layer has entries under it. Stream then stops the
// consumer (its output is never used) and calls it again with a two-pass
// stream: the first pass reads every layer, bottom first, applying the rules
// above to a tree of names; the second reads them again and emits exactly
// the tree's entries, each path by the entry that made it. Blobs that are
// not local files (a registry's) are copied into Options.WorkDir as the
// first pass reads them and read again from there, checked again; a
// layout's blobs are read again from the layout and checked again; no blob
// is downloaded twice. Layers as image builders write them (each name
// once, hard links within a layer) take the one pass; the reference image
// does. TestOnePassAgrees checks on random images that the one pass gives
// up or agrees with the two, which umoci_test.go checks against umoci.
package flatten

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/builder/spec"
)

// DefaultBound bounds what an image may expand to when the spec sets no
// disk.slotSize.
const DefaultBound = 32 << 30

// SlotFactor is how many times disk.slotSize an image may expand to.
const SlotFactor = 4

// Options tune a flattening.
type Options struct {
	// Upper are layers the caller made (slate's node files), applied on top
	// of the image's in order.
	Upper []v1.Layer
	// SlotSize is the spec's disk.slotSize, 0 if unset: it sets the bound.
	SlotSize int64
	// WorkDir receives copies of blobs that are not local files, for a
	// second reading; a temporary directory if empty. Stream removes what
	// it put there.
	WorkDir string
	// ModTime stamps the directories the layers imply but no entry gives
	// and that nothing in the root is under (a directory whose only
	// children were whited out): what tar2sqfs's defaults give the others.
	ModTime time.Time

	// bound overrides the bound (tests); mode forces a strategy (tests).
	bound int64
	mode  mode
}

type mode uint8

const (
	modeAuto    mode = iota
	modeOnePass      // one pass; errBail if the image needs two
	modeTwoPass
)

// Consumer reads a root's tar stream. Stream may call it twice (see the
// package doc); ctx is cancelled when the stream fails or the one pass gives
// up, and what the consumer made of that stream does not count. A consumer
// that returns nil must have read the stream to its end: the tar trailer
// comes only after the last check.
type Consumer func(ctx context.Context, r io.Reader) error

// errBail stops the one pass: the image needs two.
var errBail = errors.New("flatten: the image needs two passes")

// errConsumerDone is what the producer gets when the consumer stopped
// reading.
var errConsumerDone = errors.New("flatten: the consumer stopped reading")

// Stream checks and flattens img with opt.Upper on top and hands the root's
// tar stream to consume. The stream's error, if any, wins over the
// consumer's, which it usually caused.
func Stream(ctx context.Context, img v1.Image, opt Options, consume Consumer) error {
	f, err := newFlattener(img, opt)
	if err != nil {
		return err
	}
	defer f.cleanup()
	if opt.mode != modeTwoPass {
		err := f.run(ctx, f.onePass, consume)
		if err != errBail || opt.mode == modeOnePass {
			return err
		}
	}
	if err := f.plan(ctx); err != nil {
		return err
	}
	return f.run(ctx, f.emitPlan, consume)
}

type flattener struct {
	layers []*layerSrc // bottom-up: the image's, then Upper
	opt    Options
	bound  int64
	why    string // the bound, for its error
	dir    string // the work directory, once made
	tmp    bool   // dir is ours to remove
	files  []string
	plans  [][]action // two passes: what each layer emits
	sizes  []int64    // two passes: each layer's uncompressed size
	empty  []string   // two passes: the implied directories with nothing under them
}

func newFlattener(img v1.Image, opt Options) (*flattener, error) {
	f := &flattener{opt: opt}
	switch {
	case opt.bound > 0:
		f.bound, f.why = opt.bound, fmt.Sprintf("%s (test bound)", spec.Size(opt.bound))
	case opt.SlotSize > 0:
		f.bound = SlotFactor * opt.SlotSize
		f.why = fmt.Sprintf("%s, %d × disk.slotSize (%s)", spec.Size(f.bound), SlotFactor, spec.Size(opt.SlotSize))
	default:
		f.bound = DefaultBound
		f.why = fmt.Sprintf("%s, slate's bound when the spec sets no disk.slotSize", spec.Size(f.bound))
	}

	// The manifest and config must be what their digests say: the config's
	// diff_ids are what the layers' content is checked against.
	raw, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the manifest: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, err
	}
	if got := sha256Hash(raw); got != digest {
		return nil, fmt.Errorf("the manifest read hashes to %s, not to the image's digest %s", got, digest)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	if got := sha256Hash(rawCfg); got != m.Config.Digest {
		return nil, fmt.Errorf("config %s: the blob read hashes to %s", m.Config.Digest, got)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) != len(m.Layers) || len(m.Layers) != len(cf.RootFS.DiffIDs) {
		return nil, fmt.Errorf("the manifest has %d layers, the config %d diff_ids", len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	// A docker-save archive's layer digests are computed from its layers:
	// only the diff_ids check them (see source.Archive).
	archive, _ := img.(interface{ DiffIDsOnly() bool })
	byDiffID := archive != nil && archive.DiffIDsOnly()
	for i, l := range layers {
		src := &layerSrc{pos: i, layer: l, desc: m.Layers[i], diffID: cf.RootFS.DiffIDs[i], byDiffID: byDiffID,
			label: fmt.Sprintf("layer %s (%d of %d)", m.Layers[i].Digest, i+1, len(layers))}
		if byDiffID {
			src.label = fmt.Sprintf("layer with diff_id %s (%d of %d)", src.diffID, i+1, len(layers))
		}
		f.layers = append(f.layers, src)
	}
	for i, l := range opt.Upper {
		f.layers = append(f.layers, &layerSrc{pos: len(f.layers), layer: l, upper: true,
			label: fmt.Sprintf("slate's layer %d", i+1)})
	}
	return f, nil
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}
}

func (f *flattener) newBudget() *budget {
	return &budget{limit: f.bound, over: func(b *budget, what string) error {
		if what != "" {
			what = ", " + what
		}
		fix := "raise disk.slotSize if the root is really this big"
		if f.opt.SlotSize == 0 && f.opt.bound == 0 {
			fix = "set disk.slotSize if the root is really this big"
		}
		return fmt.Errorf("the image expands to more than %s%s; %s", f.why, what, fix)
	}}
}

func (f *flattener) workDir() (string, error) {
	if f.dir != "" {
		return f.dir, nil
	}
	if f.opt.WorkDir != "" {
		f.dir = f.opt.WorkDir
		return f.dir, nil
	}
	d, err := os.MkdirTemp("", "slate-flatten-")
	if err != nil {
		return "", err
	}
	f.dir, f.tmp = d, true
	return d, nil
}

func (f *flattener) cleanup() {
	for _, p := range f.files {
		os.Remove(p)
	}
	if f.tmp {
		os.RemoveAll(f.dir)
	}
}

// run hands one stream to the consumer. produce writes the entries; the
// trailer follows only when it returns nil, so a consumer never sees a
// clean end of a stream that failed.
func (f *flattener) run(ctx context.Context, produce func(context.Context, *tar.Writer) error, consume Consumer) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(pw, 256<<10)
		tw := tar.NewWriter(bw)
		err := produce(cctx, tw)
		if err == nil {
			err = tw.Close()
		}
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			cancel() // stop the consumer (and its tar2sqfs) at once
		}
		pw.CloseWithError(err)
		done <- err
	}()
	cerr := consume(cctx, pr)
	pr.CloseWithError(errConsumerDone)
	perr := <-done
	switch {
	case perr == errBail:
		return errBail
	case perr != nil && !errors.Is(perr, errConsumerDone):
		return perr
	case cerr == nil && perr != nil:
		// The trailer follows the last check: a consumer that stopped
		// before it read what was not checked yet.
		return errors.New("flatten: the consumer stopped before the stream's end")
	}
	return cerr
}

// emitDirs emits directories the layers imply but no entry gives, and that
// nothing under them would make tar2sqfs create, with its defaults.
func (f *flattener) emitDirs(tw *tar.Writer, dirs []string) error {
	mt := f.opt.ModTime
	if mt.IsZero() {
		mt = time.Unix(0, 0)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mt, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	return nil
}
