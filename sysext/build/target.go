package build

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/builder/flatten"
	"github.com/slate-os/slate/builder/source"
	"github.com/slate-os/slate/sysext"
)

// osReleasePaths are where an OS keeps its os-release, in the order
// systemd reads them (os-release(5)); the node's agent reads the same.
var osReleasePaths = []string{"etc/os-release", "usr/lib/os-release"}

// HostRelease reads the os-release of the OS image ref (a registry
// reference, oci:DIR[:TAG|@DIGEST] or docker-archive:FILE): /etc/os-release,
// else /usr/lib/os-release, symbolic links followed within the image. The
// image is flattened as a build would (digests checked, whiteouts applied).
// ref may also be a slate update artifact, whose config carries its
// image's os-release (osRelease).
func HostRelease(ctx context.Context, ref string, opt source.Options) (sysext.Release, error) {
	img, err := source.Open(ref, opt)
	if err != nil {
		return sysext.Release{}, fmt.Errorf("--for: %w", err)
	}
	if m, err := img.Manifest(); err == nil && m.Config.MediaType == artifact.ConfigMediaType {
		return artifactRelease(ctx, ref, opt)
	}
	var found *osReleases
	err = flatten.Stream(ctx, img, flatten.Options{}, func(_ context.Context, r io.Reader) error {
		found = &osReleases{files: map[string][]byte{}, links: map[string]string{}}
		return found.scan(r)
	})
	if err != nil {
		return sysext.Release{}, fmt.Errorf("--for %s: %w", ref, err)
	}
	for _, p := range osReleasePaths {
		b, ok := found.resolve(p)
		if !ok {
			continue
		}
		rel, _, err := sysext.ParseRelease(b)
		if err != nil {
			return sysext.Release{}, fmt.Errorf("--for %s: /%s: %w", ref, p, err)
		}
		if rel.ID == "" {
			return sysext.Release{}, fmt.Errorf("--for %s: /%s has no ID=, which an extension-release must match", ref, p)
		}
		return rel, nil
	}
	return sysext.Release{}, fmt.Errorf("--for %s: the image has neither /etc/os-release nor /usr/lib/os-release; give the release fields (--id, --version-id or --sysext-level) instead", ref)
}

// artifactRelease is the os-release in the config of the update artifact
// at ref.
func artifactRelease(ctx context.Context, ref string, opt source.Options) (sysext.Release, error) {
	aref := ref
	if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
		aref = artifact.LayoutPrefix + ref
	}
	opts := []artifact.Option{artifact.WithContext(ctx)}
	if opt.Insecure {
		opts = append(opts, artifact.Insecure())
	}
	if opt.Keychain != nil {
		opts = append(opts, artifact.WithKeychain(opt.Keychain))
	}
	a, err := artifact.Open(aref, opts...)
	if err != nil {
		return sysext.Release{}, fmt.Errorf("--for %s: %w", ref, err)
	}
	if a.Config.OSRelease.ID == "" {
		return sysext.Release{}, fmt.Errorf("--for %s: the update artifact's config has no osRelease (built by an older slate): give the OS image it was built from, or the release fields", ref)
	}
	return a.Config.OSRelease, nil
}

// osReleases are the files and symbolic links of an image that an
// os-release may be, or lead to (Fedora's /usr/lib/os-release is a link
// into /usr/lib/os.release.d).
type osReleases struct {
	files map[string][]byte
	links map[string]string
}

func candidate(p string) bool {
	base := path.Base(p)
	return strings.HasPrefix(base, "os-release") || strings.Contains(p, "os.release.d/")
}

func (o *osReleases) scan(r io.Reader) error {
	return eachEntry(r, func(h *tar.Header, body io.Reader) error {
		p := clean(h.Name)
		if !candidate(p) {
			return nil
		}
		switch h.Typeflag {
		case tar.TypeReg:
			b, err := io.ReadAll(io.LimitReader(body, maxRelease))
			if err != nil {
				return fmt.Errorf("/%s: %w", p, err)
			}
			o.files[p] = b
		case tar.TypeSymlink:
			o.links[p] = h.Linkname
		case tar.TypeLink:
			o.links[p] = "/" + clean(h.Linkname)
		}
		return nil
	})
}

// resolve follows links from p, at most 16 of them, to a file.
func (o *osReleases) resolve(p string) ([]byte, bool) {
	for range 16 {
		if b, ok := o.files[p]; ok {
			return b, true
		}
		t, ok := o.links[p]
		if !ok {
			return nil, false
		}
		if strings.HasPrefix(t, "/") {
			p = clean(t)
		} else {
			p = clean(path.Join(path.Dir(p), t))
		}
	}
	return nil, false
}
