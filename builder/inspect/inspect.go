// Package inspect reads back what the builder wrote: a disk image's
// partitions, boot entries and slots, or an update artifact's config, and
// the modules each initramfs loads (read from the initramfs itself, so what
// is shown is what the node boots with). A disk may be in any format the
// builder writes (package builder/format), told by its magic bytes.
package inspect

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/builder/disk"
	"github.com/slate-os/slate/builder/esp"
	"github.com/slate-os/slate/builder/format"
	"github.com/slate-os/slate/builder/source"
	"github.com/slate-os/slate/initramfs"
	"github.com/slate-os/slate/signature"
)

// Report describes a disk or an artifact.
type Report struct {
	Kind   string     `json:"kind"` // "disk" or "artifact"
	Path   string     `json:"path"`
	Format string     `json:"format,omitempty"` // a disk's: raw, vhd... (package format)
	Disk   *disk.Plan `json:"disk,omitempty"`
	Loader string     `json:"loaderConf,omitempty"`
	// Enroll lists the Secure Boot key files the disk carries for
	// systemd-boot to enroll (loader/keys/*/).
	Enroll   []string         `json:"enroll,omitempty"`
	Slots    []Slot           `json:"slots,omitempty"`
	Artifact *ArtifactSummary `json:"artifact,omitempty"`
}

// Slot is one root slot as the ESP's entries and release files describe it.
type Slot struct {
	Name       string `json:"name"`
	Partition  string `json:"partition"`
	PartUUID   string `json:"partUUID"`
	Size       int64  `json:"size"`
	State      string `json:"state"` // good, trying, bad, empty
	Entry      string `json:"entry,omitempty"`
	Version    string `json:"version,omitempty"`
	Generation int    `json:"generation,omitempty"`
	TriesLeft  *int   `json:"triesLeft,omitempty"`
	RootHash   string `json:"rootHash,omitempty"`
	Cmdline    string `json:"cmdline,omitempty"`
	// Release is slate/<slot>/release.json: what the slot's partition holds.
	Release *boot.Release `json:"release,omitempty"`
	// UKI is the slot's signed unified kernel image (Secure Boot images).
	UKI *UKI `json:"uki,omitempty"`
	// Initramfs is slate/<slot>/initramfs's load list (or the one inside
	// the slot's UKI); nil for an empty slot.
	Initramfs *initramfs.Contents `json:"initramfs,omitempty"`
	// Problems are what does not add up: an unreadable release, or one that
	// disagrees with the entry.
	Problems []string `json:"problems,omitempty"`
}

// ArtifactSummary is an update artifact's manifest digest and config.
type ArtifactSummary struct {
	Digest string          `json:"digest"`
	Config artifact.Config `json:"config"`
	// SystemdBootSize is the size of the systemd-boot layer; 0 when the
	// artifact has none (written before artifacts carried it).
	SystemdBootSize int64 `json:"systemdBootSize,omitempty"`
	// Signatures counts the signatures stored beside the artifact (slate
	// sign, cosign) in the .sig image, Bundles the Sigstore bundles that
	// refer to it (cosign v3, slate sign --bundle); which keys made them
	// only a key can tell.
	Signatures int `json:"signatures"`
	Bundles    int `json:"bundles,omitempty"`
	// Initramfs is the initramfs layer's load list.
	Initramfs *initramfs.Contents `json:"initramfs,omitempty"`
	// UKI is the unified kernel image layer of a Secure Boot image.
	UKI *UKI `json:"uki,omitempty"`
	// Problems are what could not be read (the initramfs layer).
	Problems []string `json:"problems,omitempty"`
}

// Path inspects a disk image file or an artifact (an OCI layout directory,
// oci:DIR, or a registry reference).
func Path(p string) (*Report, error) {
	fi, err := os.Stat(p)
	if err == nil && !fi.IsDir() {
		return Disk(p)
	}
	ref := p
	if err == nil && fi.IsDir() {
		ref = "oci:" + p
	} else if err := source.CheckLocal(p); err != nil {
		return nil, err // a typo, not an image on Docker Hub
	}
	a, err := artifact.Open(ref)
	if err != nil {
		return nil, err
	}
	sum := &ArtifactSummary{Digest: a.Digest.String(), Config: a.Config}
	if a.SystemdBoot != nil {
		sum.SystemdBootSize, _ = a.SystemdBoot.Size()
	}
	at, err := a.Attached()
	if err != nil {
		return nil, err
	}
	if sum.Signatures, sum.Bundles, err = at.Count(); err != nil {
		return nil, fmt.Errorf("%s: signatures: %w", p, err)
	}
	if c, err := readLayer(a.Initramfs); err != nil {
		sum.Problems = append(sum.Problems, fmt.Sprintf("initramfs layer: %v", err))
	} else {
		sum.Initramfs = c
	}
	if a.UKI != nil {
		data, err := readUKILayer(a.UKI)
		if err == nil {
			sum.UKI, _, err = readUKI("layer "+artifact.UKITitle, data)
		}
		if err != nil {
			sum.Problems = append(sum.Problems, fmt.Sprintf("unified kernel image layer: %v", err))
		}
	}
	return &Report{Kind: "artifact", Path: p, Artifact: sum}, nil
}

// readLayer reads an initramfs layer (its bytes as stored, checked against
// its digest as they stream).
func readLayer(l v1.Layer) (*initramfs.Contents, error) {
	if l == nil {
		return nil, errors.New("missing")
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return initramfs.Read(rc)
}

// Disk inspects a disk image in any of the builder's formats: a compressed
// or converted one is unpacked to a temporary raw file first (format.Open).
func Disk(path string) (*Report, error) {
	d, err := format.Open(context.Background(), path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	r, err := rawDisk(path, d.Path, d.Size)
	if err != nil {
		return nil, err
	}
	r.Format = d.Format
	return r, nil
}

// rawDisk inspects the raw disk in the first size bytes of the file at raw;
// messages call it path.
func rawDisk(path, raw string, size int64) (*Report, error) {
	plan, err := disk.Read(raw)
	if err != nil {
		if raw != path {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return nil, err
	}
	// A fixed VHD's footer follows the disk: the disk ends before it.
	plan.Size = size
	for _, p := range plan.Partitions {
		if p.Start+p.Size > size {
			return nil, fmt.Errorf("%s: partition %d (%s) ends at %d, past the disk's end (%d)", path, p.Number, p.Name, p.Start+p.Size, size)
		}
	}
	r := &Report{Kind: "disk", Path: path, Disk: &plan}
	espPart, ok := plan.ByName(boot.PartESP)
	if !ok {
		return nil, fmt.Errorf("%s: no partition named %q: not a slate disk", path, boot.PartESP)
	}
	f, err := os.Open(raw)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fs, err := esp.Open(f, espPart.Start, espPart.Size)
	if err != nil {
		return nil, fmt.Errorf("%s: partition %s: %w", path, boot.PartESP, err)
	}
	if b, err := fs.ReadFile(boot.LoaderConf); err == nil {
		r.Loader = string(b)
	}
	if dirs, err := fs.ReadDir("loader/keys"); err == nil {
		for _, d := range dirs {
			files, _ := fs.ReadDir("loader/keys/" + d)
			for _, f := range files {
				r.Enroll = append(r.Enroll, "loader/keys/"+d+f)
			}
		}
	}
	names, err := fs.ReadDir(boot.EntriesDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: partition %s: %s: %w", path, boot.PartESP, boot.EntriesDir, err)
	}
	sort.Strings(names)
	entries := map[boot.Slot]*boot.Entry{}
	entryNames := map[boot.Slot]string{}
	for _, n := range names {
		if _, ok := boot.ParseEntryName(n); !ok {
			continue
		}
		data, err := fs.ReadFile(boot.EntriesDir + "/" + n)
		if err != nil {
			return nil, fmt.Errorf("%s: %s/%s: %w", path, boot.EntriesDir, n, err)
		}
		e, err := boot.ParseEntry(n, data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if prev, dup := entryNames[e.Slot]; dup {
			return nil, fmt.Errorf("%s: slot %s has two entries (%s and %s): systemd-bless-boot cannot work with that", path, e.Slot, prev, n)
		}
		entries[e.Slot], entryNames[e.Slot] = e, n
	}
	for _, s := range boot.Slots {
		pt, _ := plan.ByName(s.PartitionName())
		slot := Slot{Name: string(s), Partition: pt.Name, PartUUID: pt.GUID, Size: pt.Size, State: "empty"}
		if e := entries[s]; e != nil {
			slot.Entry = entryNames[s]
			slot.Version, slot.Generation = e.Version, e.Generation
			slot.RootHash = boot.CmdlineValue(e.Options, boot.ArgRootHash)
			slot.Cmdline = e.Options
			slot.State = "good"
			if e.Counting {
				left := e.Left
				slot.TriesLeft = &left
				slot.State = "trying"
				if left == 0 {
					slot.State = "bad"
				}
			}
		}
		readRelease(fs, s, &slot)
		readInitramfs(fs, s, &slot)
		if e := entries[s]; e != nil && e.EFI != "" {
			data, err := fs.ReadFile(strings.TrimPrefix(e.EFI, "/"))
			if err == nil {
				slot.UKI, slot.Initramfs, err = readUKI(e.EFI, data)
			}
			if err != nil {
				slot.Problems = append(slot.Problems, fmt.Sprintf("%s: %v", e.EFI, err))
			}
		}
		r.Slots = append(r.Slots, slot)
	}
	return r, nil
}

// readRelease adds the slot's release file, if there is one. A bad one is a
// problem of the slot, not a failure: the rest of the disk is still worth
// showing.
func readRelease(fs *esp.FS, s boot.Slot, slot *Slot) {
	names, err := fs.ReadDir(s.ESPDir())
	if err != nil || !slices.Contains(names, boot.ReleaseName) {
		return // no directory (an empty slot) or no release in it
	}
	data, err := fs.ReadFile(s.ReleasePath())
	if err != nil {
		slot.Problems = append(slot.Problems, fmt.Sprintf("%s: %v", s.ReleasePath(), err))
		return
	}
	rel, err := boot.ParseRelease(data)
	if err != nil {
		slot.Problems = append(slot.Problems, fmt.Sprintf("%s: %v", s.ReleasePath(), err))
		return
	}
	slot.Release = rel
	if rel.Slot != s {
		slot.Problems = append(slot.Problems, fmt.Sprintf("%s is for slot %s", s.ReleasePath(), rel.Slot))
	}
	if slot.RootHash != "" && rel.RootHash != slot.RootHash {
		slot.Problems = append(slot.Problems, fmt.Sprintf("%s has root hash %s, the entry %s boots %s", s.ReleasePath(), rel.RootHash, slot.Entry, slot.RootHash))
	}
}

// readInitramfs adds the load list of the slot's initramfs, if it has one;
// a bad one is a problem of the slot.
func readInitramfs(fs *esp.FS, s boot.Slot, slot *Slot) {
	names, err := fs.ReadDir(s.ESPDir())
	if err != nil || !slices.Contains(names, boot.InitrdName) {
		return
	}
	data, err := fs.ReadFile(s.InitrdPath())
	if err != nil {
		slot.Problems = append(slot.Problems, fmt.Sprintf("%s: %v", s.InitrdPath(), err))
		return
	}
	if len(data) == 0 {
		return // an empty slot's placeholder
	}
	c, err := initramfs.Read(bytes.NewReader(data))
	if err != nil {
		slot.Problems = append(slot.Problems, fmt.Sprintf("%s: %v", s.InitrdPath(), err))
		return
	}
	slot.Initramfs = c
	if slot.Release != nil && c.KernelRelease != slot.Release.KernelRelease {
		slot.Problems = append(slot.Problems, fmt.Sprintf("%s has modules for kernel %s, the release says kernel %s", s.InitrdPath(), c.KernelRelease, slot.Release.KernelRelease))
	}
}

// initramfsLine is the text output's line for an initramfs.
func initramfsLine(w io.Writer, c *initramfs.Contents) {
	fmt.Fprintf(w, "  initrd   %d KiB %s, %d modules: %s\n", c.Size>>10, c.Compression, len(c.Modules), strings.Join(c.Modules, " "))
}

// Text renders a report for people.
func (r *Report) Text(w io.Writer) {
	if r.Artifact != nil {
		c := r.Artifact.Config
		fmt.Fprintf(w, "artifact %s\n  digest   %s\n  version  %s\n  arch     %s/%s\n  kernel   %s\n  root     %d bytes (squashfs %d, verity tree at %d)\n  roothash %s\n  source   %s\n  cmdline  %s\n",
			r.Path, r.Artifact.Digest, c.Version, c.OS, c.Architecture, c.KernelRelease,
			c.Root.Size, c.Root.DataSize, c.Root.HashOffset, c.Root.RootHash, c.Source, c.Cmdline)
		switch n := r.Artifact.SystemdBootSize; {
		case n > 0 && c.SystemdBootVersion != "":
			fmt.Fprintf(w, "  loader   systemd-boot %s, %d bytes\n", c.SystemdBootVersion, n)
		case n > 0:
			fmt.Fprintf(w, "  loader   %d bytes without a systemd-boot version: nodes do not install it\n", n)
		default:
			fmt.Fprintf(w, "  loader   none: upgrades leave the node's systemd-boot as it is\n")
		}
		var signed []string
		if n := r.Artifact.Signatures; n > 0 {
			d, _ := v1.NewHash(r.Artifact.Digest)
			signed = append(signed, fmt.Sprintf("%d signature(s), tag %s", n, signature.Tag(d)))
		}
		if n := r.Artifact.Bundles; n > 0 {
			signed = append(signed, fmt.Sprintf("%d Sigstore bundle(s), as referrers", n))
		}
		if len(signed) == 0 {
			signed = append(signed, "no")
		}
		fmt.Fprintf(w, "  signed   %s\n", strings.Join(signed, "; "))
		if c := r.Artifact.Initramfs; c != nil {
			initramfsLine(w, c)
		}
		if u := r.Artifact.UKI; u != nil {
			u.text(w)
		}
		for _, p := range r.Artifact.Problems {
			fmt.Fprintf(w, "  problem: %s\n", p)
		}
		return
	}
	fmt.Fprintf(w, "disk %s (%s, %d MiB, GPT %s)\n", r.Path, cmp.Or(r.Format, format.Raw), r.Disk.Size>>20, r.Disk.GUID)
	fmt.Fprintf(w, "  %-2s %-14s %-10s %-10s %s\n", "#", "name", "start", "size", "partuuid")
	for _, p := range r.Disk.Partitions {
		fmt.Fprintf(w, "  %-2d %-14s %-10s %-10s %s\n", p.Number, p.Name, mib(p.Start), mib(p.Size), p.GUID)
	}
	if len(r.Enroll) > 0 {
		fmt.Fprintf(w, "secure boot keys to enroll: %s\n", strings.Join(r.Enroll, " "))
	}
	for _, s := range r.Slots {
		fmt.Fprintf(w, "slot %s: %s", strings.ToUpper(s.Name), s.State)
		if s.Entry != "" {
			fmt.Fprintf(w, ", version %s, generation %d, entry %s", s.Version, s.Generation, s.Entry)
			if s.TriesLeft != nil {
				fmt.Fprintf(w, ", %d tries left", *s.TriesLeft)
			}
			fmt.Fprintf(w, "\n  roothash %s", s.RootHash)
		}
		fmt.Fprintln(w)
		if rel := s.Release; rel != nil {
			fmt.Fprintf(w, "  release  %s, kernel %s, root %d bytes, created %s\n", rel.Version, rel.KernelRelease, rel.RootSize, rel.Created.Format(time.RFC3339))
			fmt.Fprintf(w, "  source   %s\n", rel.Source)
			if rel.SystemdBootVersion != "" {
				fmt.Fprintf(w, "  loader   systemd-boot %s\n", rel.SystemdBootVersion)
			}
			if rel.Artifact != "" {
				fmt.Fprintf(w, "  artifact %s\n", rel.Artifact)
			}
			if !rel.Written.IsZero() {
				fmt.Fprintf(w, "  written  %s\n", rel.Written.Format(time.RFC3339))
			}
		}
		if u := s.UKI; u != nil {
			u.text(w)
		}
		if c := s.Initramfs; c != nil {
			initramfsLine(w, c)
		}
		for _, p := range s.Problems {
			fmt.Fprintf(w, "  problem: %s\n", p)
		}
	}
}

func mib(n int64) string { return fmt.Sprintf("%dMiB", n>>20) }
