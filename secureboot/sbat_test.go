package secureboot

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"unicode/utf16"

	"github.com/foxboron/go-uefi/efi/util"

	"github.com/slate-os/slate/internal/testtool"
)

func TestSBATLevelPayload(t *testing.T) {
	keys := testKeys(t)
	s, err := LoadSigner(filepath.Join(keys, "db.key"), filepath.Join(keys, "db.crt"))
	if err != nil {
		t.Fatal(err)
	}
	p2, err := SBATLevelPayload(2, s)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := SBATLevelPayload(2, s)
	if !bytes.Equal(p2, again) {
		t.Error("the same generation and key gave different payloads")
	}
	p3, _ := SBATLevelPayload(3, s)
	if g, err := PayloadGeneration(p3); err != nil || g != 3 {
		t.Errorf("PayloadGeneration = %d, %v; want 3", g, err)
	}
	// A higher generation has a later timestamp: the firmware takes it
	// over a lower one, never the other way round.
	if bytes.Compare(p2[:7], p3[:7]) >= 0 {
		t.Errorf("timestamps: generation 2 %x, generation 3 %x", p2[:7], p3[:7])
	}
	if _, err := SBATLevelPayload(0, s); err == nil {
		t.Error("generation 0 was signed")
	}

	// The signature covers name, GUID, attributes, timestamp and data, as
	// the firmware checks it: openssl verifies it with the db certificate.
	testtool.Need(t, "openssl")
	n := int(binary.LittleEndian.Uint32(p2[16:]))
	sd, data := p2[16+24:16+n], p2[16+n:]
	var signed bytes.Buffer
	for _, u := range utf16.Encode([]rune(SBATLevelName)) {
		binary.Write(&signed, binary.LittleEndian, u)
	}
	binary.Write(&signed, binary.LittleEndian, *util.StringToGUID(SlateGUID))
	binary.Write(&signed, binary.LittleEndian, sbatLevelAttrs)
	signed.Write(p2[:16])
	signed.Write(data)
	dir := t.TempDir()
	// SignedData wrapped back in a ContentInfo (id-signedData) for openssl.
	oid := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02}
	inner := append(derHeader(0xa0, len(sd)), sd...)
	ci := append(derHeader(0x30, len(oid)+len(inner)), append(oid, inner...)...)
	os.WriteFile(filepath.Join(dir, "sig.der"), ci, 0o644)
	os.WriteFile(filepath.Join(dir, "content"), signed.Bytes(), 0o644)
	verify := func(content string) error {
		return exec.Command("openssl", "cms", "-verify", "-inform", "DER", "-in", filepath.Join(dir, "sig.der"), "-binary",
			"-content", content, "-CAfile", filepath.Join(keys, "db.crt"), "-purpose", "any", "-out", os.DevNull).Run()
	}
	if err := verify(filepath.Join(dir, "content")); err != nil {
		t.Errorf("openssl cms -verify: %v", err)
	}
	tampered := bytes.Replace(signed.Bytes(), []byte("slate,2"), []byte("slate,1"), 1)
	os.WriteFile(filepath.Join(dir, "tampered"), tampered, 0o644)
	if err := verify(filepath.Join(dir, "tampered")); err == nil {
		t.Error("openssl verified the signature over other data")
	}
}

func derHeader(tag byte, n int) []byte {
	switch {
	case n < 0x80:
		return []byte{tag, byte(n)}
	case n < 0x100:
		return []byte{tag, 0x81, byte(n)}
	default:
		return []byte{tag, 0x82, byte(n >> 8), byte(n)}
	}
}

func TestSBATLevelVariable(t *testing.T) {
	dir := t.TempDir()
	if l, err := SBATLevel(dir); err != nil || l != 0 {
		t.Fatalf("no variable: %d, %v", l, err)
	}
	os.WriteFile(filepath.Join(dir, SBATLevelName+"-"+SlateGUID), []byte("\x27\x00\x00\x00slate,4\n"), 0o644)
	if l, err := SBATLevel(dir); err != nil || l != 4 {
		t.Errorf("SBATLevel = %d, %v; want 4", l, err)
	}
	for _, bad := range []string{"slate,0", "slate,x", "other,3", ""} {
		if _, err := ParseSBATLevel([]byte(bad)); err == nil {
			t.Errorf("ParseSBATLevel(%q) accepted it", bad)
		}
	}
}
