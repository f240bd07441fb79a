// Package build makes system extension images (EXT.raw): the squashfs of
// an OCI image's or a directory's /usr and /opt, written by the same
// tar2sqfs runner as the root (builder/squashfs), with a dm-verity tree
// appended (verity.Append), exactly the format of a root slot. The image
// carries usr/lib/extension-release.d/extension-release.NAME: the source's
// own, or one written for the OS image the extension is for (--for, read
// from its os-release as sysext.ForHost says). The output goes to a file,
// to an extension artifact (artifact.WriteExtension), or both.
//
// The same source, name and version give byte-identical images: an
// image's entries keep their own times (a directory's get one), and the
// verity salt derives from the content's digest, the name and the version.
//
// Inspect reads an EXT.raw back: its extension-release and the verity root
// hash, recomputed from the data, with the stored tree checked against it.
package build

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/builder/flatten"
	"github.com/slate-os/slate/builder/source"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/builder/squashfs"
	"github.com/slate-os/slate/internal/fsync"
	"github.com/slate-os/slate/sysext"
)

// Options say what to build from, for which OS, and where to write it.
type Options struct {
	// Source is an OCI image (a registry reference, oci:DIR[:TAG|@DIGEST],
	// docker-archive:FILE or a docker-save .tar) or a directory that holds
	// the extension's usr/ and opt/ (a directory with an index.json is
	// taken for an OCI layout).
	Source        string
	SourceOptions source.Options

	// Name is the extension's name; empty takes it from the source's
	// extension-release file when it carries exactly one.
	Name string
	// Version labels the extension (and tags its artifact); empty takes
	// the source image's org.opencontainers.image.version label.
	Version string

	// For is the OS image the extension is for (a reference as Source
	// takes, not a directory): its os-release gives the extension-release.
	For string
	// Release is the extension-release when For is empty (ID "_any"
	// matches every OS; an empty Architecture is x86-64, what slate
	// builds). With neither, the source must carry its own. When the source
	// carries one, For or the fields Release sets must agree with it.
	Release sysext.Release

	// Output is the EXT.raw file to write; Artifact the extension
	// artifact's OCI layout directory. At least one.
	Output   string
	Artifact string

	// Compression and Level are tar2sqfs's; empty and 0 give the root's
	// defaults (zstd, level 3).
	Compression string
	Level       int
	// ModTime is a directory source's one mtime and its Created; zero is
	// the Unix epoch. An image's entries keep theirs; its creation time is
	// the extension's.
	ModTime time.Time

	// Log receives one line per step; nil for none.
	Log io.Writer
}

// Result is what Build made.
type Result struct {
	// Config is the extension's config, as the artifact carries it.
	Config sysext.Config `json:"config"`
	// ReleaseKept says the extension-release is the source's own; else
	// Build wrote it.
	ReleaseKept bool `json:"releaseKept"`
	// For is the os-release of Options.For, when given.
	For *sysext.Release `json:"for,omitempty"`
	// Output and Artifact are what was written; Digest is the artifact's
	// manifest digest.
	Output   string `json:"output,omitempty"`
	Artifact string `json:"artifact,omitempty"`
	Digest   string `json:"digest,omitempty"`
	// Entries counts the entries of the squashfs's tar stream (the
	// extension-release included); DroppedXattrs the extended attributes
	// squashfs cannot hold (system.*), left out.
	Entries       int `json:"entries"`
	DroppedXattrs int `json:"droppedXattrs,omitempty"`
}

// Build makes the extension image that opt describes.
func Build(ctx context.Context, opt Options) (*Result, error) {
	b := &builder{opt: opt, res: &Result{}}
	if err := b.check(); err != nil {
		return nil, err
	}
	return b.run(ctx)
}

type builder struct {
	opt    Options
	res    *Result
	target *sysext.Release // the extension-release to write, if the source has none
	host   *sysext.Release // For's os-release, to match a kept release against
	given  bool            // target came from Options.Release
}

func (b *builder) log(format string, args ...any) {
	if b.opt.Log != nil {
		fmt.Fprintf(b.opt.Log, "sysext: "+format+"\n", args...)
	}
}

func (b *builder) check() error {
	o := b.opt
	switch {
	case o.Source == "":
		return errors.New("no source: give an OCI image or a directory (--source)")
	case o.Output == "" && o.Artifact == "":
		return errors.New("nothing to write: give --output EXT.raw, --artifact DIR or both")
	case o.For != "" && o.Release != (sysext.Release{}):
		return errors.New("give either --for IMAGE or the release fields (--id, --version-id, --sysext-level), not both")
	case o.Release == (sysext.Release{}):
	case o.Release.ID == "":
		return errors.New("the release fields need --id (the OS's ID, or _any for every OS)")
	}
	if o.Name != "" {
		if err := sysext.CheckName(o.Name); err != nil {
			return fmt.Errorf("--name: %w", err)
		}
	}
	if o.Release.ID != "" {
		if p := problems(sysext.Config{Release: o.Release}, "config.release."); len(p) > 0 {
			return fmt.Errorf("release fields: %s", strings.Join(p, "; "))
		}
		r := o.Release
		b.target, b.given = &r, true
	}
	return nil
}

// problems are c's Check problems about the fields starting with prefix,
// for what is known before the image is built.
func problems(c sysext.Config, prefix string) []string {
	var p []string
	for _, s := range c.Check() {
		if strings.HasPrefix(s, prefix) {
			p = append(p, s)
		}
	}
	return p
}

func (b *builder) run(ctx context.Context) (*Result, error) {
	o := b.opt
	// The target first: a missing os-release fails before the long part.
	if o.For != "" {
		b.log("reading the os-release of %s", o.For)
		host, err := HostRelease(ctx, o.For, o.SourceOptions)
		if err != nil {
			return nil, err
		}
		t := sysext.ForHost(host)
		b.host, b.target, b.res.For = &host, &t, &host
	}

	src, err := b.openSource()
	if err != nil {
		return nil, err
	}
	if o.Version != "" {
		src.version = o.Version
	}
	if src.version == "" {
		return nil, fmt.Errorf("source %s: no version: give --version (the image has no org.opencontainers.image.version label)", o.Source)
	}
	if p := problems(sysext.Config{Version: src.version}, "config.version"); len(p) > 0 {
		return nil, fmt.Errorf("version: %s", strings.Join(p, "; "))
	}

	work, err := os.MkdirTemp("", "slate-sysext-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	img, err := b.tempImage(work)
	if err != nil {
		return nil, err
	}
	defer os.Remove(img) // renamed away on success

	b.log("squashfs from %s", o.Source)
	f, digest, err := b.squash(ctx, src, img, work)
	if err != nil {
		return nil, err
	}

	b.log("verity tree")
	seed := sha256.Sum256([]byte("slate sysext\x00" + digest + "\x00" + f.name + "\x00" + src.version))
	layout, _, err := verity.Append(img, seed[:])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", img, err)
	}
	cfg := sysext.Config{
		Name: f.name, Version: src.version, Release: f.release,
		Architecture: boot.Arch, OS: boot.OS, Source: src.digest,
		Image: layout, Created: src.created,
	}
	if p := cfg.Check(); len(p) > 0 {
		return nil, fmt.Errorf("extension %s: %s", f.name, strings.Join(p, "; "))
	}
	b.res.Config, b.res.ReleaseKept = cfg, f.kept
	b.res.Entries, b.res.DroppedXattrs = f.entries, f.dropped

	if o.Artifact != "" {
		b.log("artifact %s", o.Artifact)
		d, err := artifact.WriteExtension(o.Artifact, cfg, artifact.Blob{Path: img})
		if err != nil {
			return nil, err
		}
		b.res.Artifact, b.res.Digest = o.Artifact, d.String()
	}
	if o.Output != "" {
		if err := os.Chmod(img, 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(img, o.Output); err != nil {
			return nil, err
		}
		if err := fsync.Path(filepath.Dir(o.Output)); err != nil {
			return nil, err
		}
		b.res.Output = o.Output
		b.log("wrote %s", o.Output)
	}
	return b.res, nil
}

// tempImage is the file the squashfs and tree are written to: beside the
// output, so that it is renamed into place, else in work.
func (b *builder) tempImage(work string) (string, error) {
	if b.opt.Output == "" {
		return filepath.Join(work, "extension.raw"), nil
	}
	dir, base := filepath.Split(b.opt.Output)
	if dir == "" {
		dir = "."
	}
	if fi, err := os.Stat(b.opt.Output); err == nil && fi.IsDir() {
		return "", fmt.Errorf("--output %s is a directory; give the EXT.raw file to write", b.opt.Output)
	}
	t, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return "", err
	}
	return t.Name(), t.Close()
}

// src is an opened source.
type src struct {
	dir     string   // a directory source, or
	image   v1.Image // an image source
	digest  string   // the image's digest
	version string   // its org.opencontainers.image.version label
	created time.Time
}

func (b *builder) openSource() (*src, error) {
	o := b.opt
	if fi, err := os.Stat(o.Source); err == nil && fi.IsDir() {
		if _, err := os.Stat(filepath.Join(o.Source, "index.json")); err != nil {
			t := o.ModTime
			if t.IsZero() {
				t = time.Unix(0, 0)
			}
			return &src{dir: o.Source, created: t.UTC()}, nil
		}
	}
	img, err := source.Open(o.Source, o.SourceOptions)
	if err != nil {
		return nil, err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", o.Source, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("source %s: reading its config: %w", o.Source, err)
	}
	if cf.Architecture != "" && cf.Architecture != boot.Arch {
		return nil, fmt.Errorf("source %s is for %s; slate's nodes are %s", o.Source, cf.Architecture, boot.Arch)
	}
	created := cf.Created.Time.UTC()
	if created.IsZero() || created.Before(time.Unix(0, 0)) {
		created = time.Unix(0, 0).UTC()
	}
	return &src{image: img, digest: d.String(), version: cf.Config.Labels["org.opencontainers.image.version"], created: created}, nil
}

// squash writes the squashfs of s to out and returns the filter that
// checked the stream and the digest of what tar2sqfs read.
func (b *builder) squash(ctx context.Context, s *src, out, work string) (*filter, string, error) {
	comp, level := b.opt.Compression, b.opt.Level
	if comp == "" {
		comp = spec.DefaultCompression
	}
	if level == 0 && comp == "zstd" {
		level = spec.DefaultZstdLevel
	}
	var (
		f *filter
		h hash.Hash
	)
	write := func(ctx context.Context, fill func(*filter) error) error {
		f, h = b.newFilter(s.created), sha256.New()
		_, err := squashfs.Write(ctx, out, squashfs.Options{Compression: comp, Level: level, ModTime: s.created, Tee: h},
			func(tw *tar.Writer) error {
				f.tw = tw
				if err := fill(f); err != nil {
					return err
				}
				return f.finish()
			})
		return err
	}
	var err error
	if s.dir != "" {
		err = write(ctx, func(f *filter) error { return walkDir(s.dir, s.created, f) })
		if err != nil {
			err = fmt.Errorf("source %s: %w", s.dir, err)
		}
	} else {
		// flatten checks every blob against its digest and applies the
		// whiteouts; it may stream twice (the last one counts).
		err = flatten.Stream(ctx, s.image, flatten.Options{WorkDir: work, ModTime: s.created},
			func(ctx context.Context, r io.Reader) error {
				return write(ctx, func(f *filter) error { return f.copyTar(r) })
			})
		if err != nil {
			err = fmt.Errorf("source %s: %w", b.opt.Source, err)
		}
	}
	if err != nil {
		return nil, "", err
	}
	return f, "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
