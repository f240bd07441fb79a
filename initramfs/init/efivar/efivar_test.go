package efivar

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSetGetDelete(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if _, _, err := s.Get("SlateTest", SlateGUID); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("unset variable: %v", err)
	}
	if err := s.Set("SlateTest", SlateGUID, Default, []byte(`{"a":"longer value"}`)); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(s.Dir + "/SlateTest-b3297508-91e8-4c73-a7e1-81d6f47d4769")
	if err != nil || !bytes.Equal(raw, append([]byte{7, 0, 0, 0}, `{"a":"longer value"}`...)) {
		t.Fatalf("file: %q %v", raw, err)
	}
	// A shorter value replaces it whole.
	if err := s.Set("SlateTest", SlateGUID, Default, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	attrs, data, err := s.Get("SlateTest", SlateGUID)
	if err != nil || attrs != 7 || string(data) != "{}" {
		t.Errorf("Get = %#x %q %v", attrs, data, err)
	}
	if err := s.Delete("SlateTest", SlateGUID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get("SlateTest", SlateGUID); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Delete: %v", err)
	}
	if err := s.Delete("SlateTest", SlateGUID); err != nil {
		t.Errorf("deleting an unset variable: %v", err)
	}
	os.WriteFile(s.Path("Short", SlateGUID), []byte{7, 0}, 0o644)
	if _, _, err := s.Get("Short", SlateGUID); err == nil {
		t.Error("a 2-byte variable file was read")
	}
}

func TestString(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if v, err := s.String("LoaderBootCountPath", LoaderGUID); v != "" || err != nil {
		t.Errorf("unset: %q %v", v, err)
	}
	// As systemd-boot sets it: attributes BS|RT (not NV), a NUL-terminated UTF-16LE path.
	path := `\loader\entries\slate-b+3.conf`
	if err := s.Set("LoaderBootCountPath", LoaderGUID, BootserviceAccess|RuntimeAccess, EncodeUTF16(path)); err != nil {
		t.Fatal(err)
	}
	if v, err := s.String("LoaderBootCountPath", LoaderGUID); v != path || err != nil {
		t.Errorf("String = %q %v", v, err)
	}
	if got := DecodeUTF16([]byte{'a', 0, 'b'}); got != "a" {
		t.Errorf("odd length: %q", got)
	}
	if got := DecodeUTF16(EncodeUTF16("é€😀")); got != "é€😀" {
		t.Errorf("round trip: %q", got)
	}
}

// efivarfs makes a variable's file immutable; Set and Delete clear the flag.
func TestImmutable(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if err := s.Set("SlateTest", SlateGUID, Default, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := setImmutable(s.Path("SlateTest", SlateGUID)); err != nil {
		t.Skipf("no immutable flag here: %v", err)
	}
	t.Cleanup(func() { clearImmutable(s.Path("SlateTest", SlateGUID)) })
	if err := os.WriteFile(s.Path("SlateTest", SlateGUID), []byte("x"), 0o644); err == nil {
		t.Fatal("the immutable file was written: the flag did not take")
	}
	if err := s.Set("SlateTest", SlateGUID, Default, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if _, data, _ := s.Get("SlateTest", SlateGUID); string(data) != "two" {
		t.Errorf("after Set: %q", data)
	}
	setImmutable(s.Path("SlateTest", SlateGUID))
	if err := s.Delete("SlateTest", SlateGUID); err != nil {
		t.Fatal(err)
	}
}

func setImmutable(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags|fsImmutableFL))
}
