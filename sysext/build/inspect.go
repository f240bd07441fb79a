package build

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"

	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/sysext"
)

// squashfsMagic starts every squashfs (little-endian "hsqs").
const squashfsMagic = "hsqs"

// Report is what an extension image file holds, read back from it.
type Report struct {
	Kind string `json:"kind"` // "extension-image"
	Path string `json:"path"`
	// Name is NAME of its extension-release.NAME; empty when it has not
	// exactly one.
	Name string `json:"name,omitempty"`
	// Release is that file's fields; ReleaseFile every key it sets.
	Release     *sysext.Release   `json:"release,omitempty"`
	ReleaseFile map[string]string `json:"releaseFile,omitempty"`
	// Image is the layout as an extension's config carries it, with the
	// root hash recomputed from the data (never read from the tree).
	Image verity.Layout `json:"image"`
	// TreeRootHash is the root hash the stored tree gives, when it is not
	// the data's.
	TreeRootHash string `json:"treeRootHash,omitempty"`
	// SquashfsSize is the squashfs's own size, before the 4 KiB padding.
	SquashfsSize int64 `json:"squashfsSize"`
	// TreeConsistent says that the stored hash tree is the one the data
	// gives: dm-verity opens the image with RootHash.
	TreeConsistent bool `json:"treeConsistent"`
	// Problems are what makes it unfit for a node.
	Problems []string `json:"problems,omitempty"`
}

// IsImage says whether path is a file that starts with a squashfs: an
// extension image (or a bare squashfs, which Inspect then refuses).
func IsImage(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return false
	}
	m := make([]byte, 4)
	_, err = io.ReadFull(f, m)
	return err == nil && string(m) == squashfsMagic
}

// Inspect reads the extension image at path: its layout and verity root
// hash (recomputed from the data, the stored tree checked against it), and
// its extension-release, read with rdsquashfs (squashfs-tools-ng). What is
// wrong with the image is in Problems; the error is for what could not be
// read at all.
func Inspect(path string) (*Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	sb := make([]byte, 96)
	if _, err := io.ReadFull(f, sb); err != nil || string(sb[:4]) != squashfsMagic {
		return nil, fmt.Errorf("%s: not a squashfs (an extension image starts with one)", path)
	}
	r := &Report{Kind: "extension-image", Path: path}
	r.SquashfsSize = int64(binary.LittleEndian.Uint64(sb[40:]))
	data := (r.SquashfsSize + verity.BlockSize - 1) / verity.BlockSize * verity.BlockSize
	r.Image = verity.Layout{Size: fi.Size(), DataSize: data, HashOffset: data, Algorithm: verity.Algorithm,
		DataBlockSize: verity.BlockSize, HashBlockSize: verity.BlockSize}
	if err := r.readTree(f); err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	if err := r.readRelease(path); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, errors.New("rdsquashfs not found: install squashfs-tools-ng (Debian: apt-get install squashfs-tools-ng)")
		}
		r.Problems = append(r.Problems, err.Error())
	}
	return r, nil
}

// readTree recomputes the root hash from the data, with the salt of the
// superblock at the data's end, and checks the stored tree against it.
func (r *Report) readTree(f *os.File) error {
	l := &r.Image
	if l.Size <= l.DataSize {
		return fmt.Errorf("nothing after the squashfs (%d bytes, padded to %d): no verity tree (a bare squashfs?)", r.SquashfsSize, l.DataSize)
	}
	sb, err := verity.ReadSuperblock(f, l.HashOffset)
	if err != nil {
		return err
	}
	if sb.DataBlocks*verity.BlockSize != uint64(l.DataSize) {
		return fmt.Errorf("the verity superblock covers %d bytes of data, the squashfs takes %d", sb.DataBlocks*verity.BlockSize, l.DataSize)
	}
	l.Salt = hex.EncodeToString(sb.Salt)
	tree, err := verity.Build(io.NewSectionReader(f, 0, l.DataSize), l.DataSize, sb.Salt, sb.UUID)
	if err != nil {
		return err
	}
	l.RootHash = tree.RootHashHex()
	// The tree's own root, checked against the data: a mismatch is pinned
	// on the block (data or hash) that disagrees.
	stored, err := verity.StoredRoot(f, l.DataSize)
	if err != nil {
		return err
	}
	if h := hex.EncodeToString(stored); h != l.RootHash {
		r.TreeRootHash = h
	}
	if err := verity.Verify(f, l.DataSize, stored); err != nil {
		return fmt.Errorf("the stored hash tree does not match the data: %w", err)
	}
	r.TreeConsistent = true
	if p := l.Check("image"); len(p) > 0 {
		return errors.New(strings.Join(p, "; "))
	}
	if min := l.MinSize(); l.Size > min {
		return fmt.Errorf("%d bytes after the verity tree (it ends at byte %d)", l.Size-min, min)
	}
	return nil
}

// readRelease finds the extension-release and checks the top directory.
func (r *Report) readRelease(path string) error {
	top, err := listDir(path, "/")
	if err != nil {
		return err
	}
	for _, n := range top {
		if n != "usr" && n != "opt" {
			r.Problems = append(r.Problems, sysext.CheckPath(n).Error())
		}
	}
	names, err := listDir(path, "/"+releaseDir)
	if err != nil {
		return fmt.Errorf("no /%s: %w", sysext.ReleasePath("NAME"), err)
	}
	var found []string
	for _, n := range names {
		if name, ok := strings.CutPrefix(n, "extension-release."); ok {
			found = append(found, name)
		}
	}
	switch len(found) {
	case 0:
		return fmt.Errorf("no /%s: systemd-sysext merges no extension without one", sysext.ReleasePath("NAME"))
	case 1:
	default:
		return fmt.Errorf("%d extension-release files in /%s (%s): an extension has one", len(found), releaseDir, strings.Join(found, ", "))
	}
	r.Name = found[0]
	b, err := rdsquashfs(path, "--cat", "/"+sysext.ReleasePath(r.Name))
	if err != nil {
		return err
	}
	rel, kv, err := sysext.ParseRelease(b)
	if err != nil {
		return fmt.Errorf("/%s: %w", sysext.ReleasePath(r.Name), err)
	}
	r.Release, r.ReleaseFile = &rel, kv
	if err := sysext.CheckName(r.Name); err != nil {
		return err
	}
	if rel.ID == "" {
		return fmt.Errorf("/%s: no ID= (systemd-sysext merges no extension without one)", sysext.ReleasePath(r.Name))
	}
	return nil
}

// listDir lists a directory of the squashfs, names only, sorted.
func listDir(path, dir string) ([]string, error) {
	out, err := rdsquashfs(path, "--list", dir)
	if err != nil {
		return nil, err
	}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "-rw-r--r-- 0/0 5 NAME", "lrwxrwxrwx 0/0 3 NAME -> TARGET"
		f := strings.SplitN(sc.Text(), " ", 4)
		if len(f) < 4 {
			continue
		}
		n := f[3]
		if strings.HasPrefix(f[0], "l") {
			n, _, _ = strings.Cut(n, " -> ")
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names, sc.Err()
}

func rdsquashfs(path string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.Command("rdsquashfs", append(args, path)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, err
		}
		msg := strings.TrimSpace(stderr.String())
		msg = strings.TrimPrefix(msg, path+": ")
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("rdsquashfs %s: %s", strings.Join(args, " "), msg)
	}
	return out, nil
}

// Text renders the report for people.
func (r *Report) Text(w io.Writer) {
	l := r.Image
	fmt.Fprintf(w, "extension image %s\n", r.Path)
	if r.Name != "" {
		fmt.Fprintf(w, "  name      %s\n", r.Name)
	}
	if r.Release != nil {
		fmt.Fprintf(w, "  release   %s\n", r.Release)
	}
	fmt.Fprintf(w, "  image     %d bytes (squashfs %d, padded to %d; verity tree at %d)\n", l.Size, r.SquashfsSize, l.DataSize, l.HashOffset)
	if l.RootHash != "" {
		fmt.Fprintf(w, "  roothash  %s (recomputed from the data)\n  salt      %s\n", l.RootHash, l.Salt)
	}
	if r.TreeRootHash != "" {
		fmt.Fprintf(w, "  treeroot  %s (the stored tree's, not the data's)\n", r.TreeRootHash)
	}
	if r.TreeConsistent && l.DataSize == verity.BlockSize {
		fmt.Fprintf(w, "  tree      none: one data block, whose hash is the root hash (only a config's root hash can check it)\n")
	} else if r.TreeConsistent {
		fmt.Fprintf(w, "  tree      consistent with the data\n")
	} else {
		fmt.Fprintf(w, "  tree      NOT consistent with the data\n")
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
}
