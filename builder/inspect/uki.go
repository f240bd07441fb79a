package inspect

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/boot/uki"
	"github.com/slate-os/slate/initramfs"
	"github.com/slate-os/slate/secureboot"
)

// UKI is a unified kernel image as it would boot: its signed command line
// and SBAT entries, and who signed it.
type UKI struct {
	Path    string `json:"path,omitempty"`
	Size    int64  `json:"size"`
	Cmdline string `json:"cmdline"`
	SBAT    string `json:"sbat,omitempty"`
	// SignedBy and Fingerprint name the signing certificates; empty when
	// the image is unsigned (firmware with Secure Boot on refuses it).
	SignedBy    []string `json:"signedBy,omitempty"`
	Fingerprint []string `json:"fingerprint,omitempty"`
}

// readUKI reads a UKI's sections and signers, and the load list of the
// initramfs inside it.
func readUKI(path string, data []byte) (*UKI, *initramfs.Contents, error) {
	img, err := uki.Read(data)
	if err != nil {
		return nil, nil, err
	}
	u := &UKI{Path: path, Size: int64(len(data)), Cmdline: string(img.Cmdline), SBAT: strings.TrimSpace(string(img.SBAT))}
	signers, err := secureboot.Signers(data)
	if err != nil {
		return u, nil, fmt.Errorf("its signatures: %w", err)
	}
	for _, c := range signers {
		u.SignedBy = append(u.SignedBy, c.Subject.String())
		u.Fingerprint = append(u.Fingerprint, secureboot.Fingerprint(c))
	}
	var c *initramfs.Contents
	if len(img.Initrd) > 0 {
		if c, err = initramfs.Read(bytes.NewReader(img.Initrd)); err != nil {
			return u, nil, fmt.Errorf("its .initrd: %w", err)
		}
	}
	return u, c, nil
}

// readUKILayer reads an artifact's UKI layer whole.
func readUKILayer(l v1.Layer) ([]byte, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func (u *UKI) text(w io.Writer) {
	signed := "NOT SIGNED"
	if len(u.SignedBy) > 0 {
		var s []string
		for i := range u.SignedBy {
			s = append(s, fmt.Sprintf("%s (%s)", u.SignedBy[i], u.Fingerprint[i]))
		}
		signed = "signed by " + strings.Join(s, ", ")
	}
	fmt.Fprintf(w, "  uki      %s, %d bytes, %s\n  signed cmdline %s\n", u.Path, u.Size, signed, u.Cmdline)
	for _, l := range strings.Split(u.SBAT, "\n") {
		if strings.HasPrefix(l, "slate,") {
			fmt.Fprintf(w, "  sbat     %s\n", l)
		}
	}
}
