package configsrc

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// fake is a source that returns what it is told and counts its calls.
type fake struct {
	name  string
	data  string
	err   error
	calls *int
}

func (f fake) Name() string { return f.name }
func (f fake) Fetch(ctx context.Context) ([]byte, error) {
	*f.calls++
	if f.err != nil {
		return nil, f.err
	}
	if f.data == "" {
		return nil, ErrNotFound
	}
	EnvFrom(ctx).Location = "at-" + f.name
	return []byte(f.data), nil
}

func TestRegisteredOrder(t *testing.T) {
	want := []string{"cmdline", "fw_cfg", "config-drive", "nocloud", "openstack", "ec2", "gce", "azure"}
	if got := Names(Sources); !reflect.DeepEqual(got, want) {
		t.Errorf("Sources = %v, want %v", got, want)
	}
	for _, bad := range []struct {
		order int
		src   Source
	}{
		{OrderFwCfg, fake{name: "other"}}, // same order key
		{999, fake{name: "cmdline"}},      // same name
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%d, %s) did not panic", bad.order, bad.src.Name())
				}
			}()
			Register(bad.order, bad.src)
		}()
	}
	if got := Names(Sources); !reflect.DeepEqual(got, want) {
		t.Errorf("after refused registrations, Sources = %v", got)
	}
}

func TestFirst(t *testing.T) {
	var a, b, c int
	reset := func() { a, b, c = 0, 0, 0 }
	srcs := func(x, y, z fake) []Source {
		x.calls, y.calls, z.calls = &a, &b, &c
		return []Source{x, y, z}
	}
	env := &Env{}
	ctx := WithEnv(context.Background(), env)

	// The first source that has a config wins; later ones are not asked.
	name, data, err := First(ctx, srcs(fake{name: "a"}, fake{name: "b", data: "from b"}, fake{name: "c", data: "from c"}))
	if name != "b" || string(data) != "from b" || err != nil || a != 1 || b != 1 || c != 0 || env.Location != "at-b" {
		t.Errorf("First = %q %q %v; calls %d %d %d; location %q", name, data, err, a, b, c, env.Location)
	}
	// A source with a config it cannot read wins too: its error, no fall-through.
	reset()
	boom := errors.New("I/O error")
	name, data, err = First(ctx, srcs(fake{name: "a", err: boom}, fake{name: "b", data: "from b"}, fake{name: "c"}))
	if name != "a" || data != nil || !errors.Is(err, boom) || b != 0 {
		t.Errorf("First with a failing source = %q %q %v; b called %d times", name, data, err, b)
	}
	// None: ErrNotFound, every source asked once.
	reset()
	name, _, err = First(ctx, srcs(fake{name: "a"}, fake{name: "b"}, fake{name: "c"}))
	if name != "" || !errors.Is(err, ErrNotFound) || a != 1 || b != 1 || c != 1 {
		t.Errorf("First with nothing = %q %v; calls %d %d %d", name, err, a, b, c)
	}
	// Too big.
	reset()
	big := strings.Repeat("x", MaxSize+1)
	name, _, err = First(ctx, srcs(fake{name: "a", data: big}, fake{name: "b", data: "small"}, fake{name: "c"}))
	if name != "a" || err == nil || !strings.Contains(err.Error(), "more than the 8388608 allowed") {
		t.Errorf("First with a huge config = %q %v", name, err)
	}
	// A cancelled context stops the search.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := First(cctx, srcs(fake{name: "a", data: "x"}, fake{name: "b"}, fake{name: "c"})); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// emptySource returns a config of zero bytes.
type emptySource struct{}

func (emptySource) Name() string                          { return "empty" }
func (emptySource) Fetch(context.Context) ([]byte, error) { return []byte{}, nil }

func TestFirstEmpty(t *testing.T) {
	name, _, err := First(context.Background(), []Source{emptySource{}})
	if name != "empty" || err == nil || err.Error() != "the config is empty" {
		t.Errorf("empty config: %q %v", name, err)
	}
}
