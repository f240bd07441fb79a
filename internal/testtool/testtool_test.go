package testtool

import (
	"testing"
)

// fakeTB records what a helper did to a test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Skip(args ...any)               { f.skipped = true; f.msg = args[0].(string); panic(f) }
func (f *fakeTB) Fatalf(format string, a ...any) { f.failed = true; f.msg = format; panic(f) }
func (f *fakeTB) Errorf(format string, a ...any) { f.failed = true; f.msg = format }
func (f *fakeTB) Logf(format string, a ...any)   {}

func call(f func(testing.TB)) (tb *fakeTB) {
	tb = &fakeTB{}
	defer func() {
		if r := recover(); r != nil && r != any(tb) {
			panic(r)
		}
	}()
	f(tb)
	return tb
}

func TestNeed(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv(Env, "")
	t.Setenv("SLATE_REQUIRE_QEMU", "")
	if tb := call(func(tb testing.TB) { Need(tb, "tar2sqfs") }); !tb.skipped || tb.failed {
		t.Errorf("make unit: %+v, want a skip", tb)
	}
	if tb := call(func(tb testing.TB) { Have(tb, "tar2sqfs") }); tb.skipped || tb.failed {
		t.Errorf("make unit, Have: %+v", tb)
	}
	t.Setenv(Env, "1")
	if tb := call(func(tb testing.TB) { Need(tb, "tar2sqfs") }); tb.skipped || !tb.failed {
		t.Errorf("make test: %+v, want a failure", tb)
	}
	if tb := call(func(tb testing.TB) { Have(tb, "tar2sqfs") }); !tb.failed {
		t.Errorf("make test, Have: %+v, want a failure", tb)
	}
	if tb := call(func(tb testing.TB) { Any(tb, "genisoimage", "xorriso") }); !tb.failed {
		t.Errorf("make test, Any: %+v, want a failure", tb)
	}
	if tb := call(func(tb testing.TB) { File(tb, t.TempDir()+"/linuxx64.efi.stub") }); !tb.failed {
		t.Errorf("make test, File: %+v, want a failure", tb)
	}
}
