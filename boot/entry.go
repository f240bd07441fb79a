package boot

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Entry is a Boot Loader Specification type 1 entry for one slot. Its file
// name carries systemd-boot's boot counter: slate-a.conf (no counting, a
// known-good slot), slate-b+3.conf (3 tries left), slate-b+2-1.conf (2 left,
// 1 spent), slate-b+0-3.conf (none left: systemd-boot sorts it last).
type Entry struct {
	Slot Slot
	// Generation orders the slots: the highest generation boots first.
	Generation int
	// Counting is true when the file name carries a boot counter.
	Counting bool
	// Left and Done are the counter's tries left and spent.
	Left, Done int

	Title   string
	Version string // the image's version label, from the title line's "version" comment key
	Linux   string
	Initrd  string
	// EFI is a Unified Kernel Image to boot instead of Linux and Initrd
	// (Secure Boot: the UKI carries kernel, initramfs and command line,
	// all signed).
	EFI     string
	Options string
}

var entryName = regexp.MustCompile(`^slate-([ab])(?:\+(\d+)(?:-(\d+))?)?\.conf$`)

// FileName is the entry's name under loader/entries.
func (e *Entry) FileName() string {
	name := "slate-" + string(e.Slot)
	if e.Counting {
		name += "+" + strconv.Itoa(e.Left)
		if e.Done > 0 {
			name += "-" + strconv.Itoa(e.Done)
		}
	}
	return name + ".conf"
}

// Marshal renders the entry's file. sort-key is the same for both slots, so
// systemd-boot orders them by version, that is by generation.
func (e *Entry) Marshal() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "title %s\n", e.Title)
	fmt.Fprintf(&b, "sort-key %s\n", EntrySortKey)
	fmt.Fprintf(&b, "version %d\n", e.Generation)
	if e.EFI != "" {
		fmt.Fprintf(&b, "efi %s\n", e.EFI)
	} else {
		fmt.Fprintf(&b, "linux %s\n", e.Linux)
		fmt.Fprintf(&b, "initrd %s\n", e.Initrd)
	}
	fmt.Fprintf(&b, "options %s\n", e.Options)
	return []byte(b.String())
}

// ParseEntryName reads the slot and boot counter from an entry's file name.
// ok is false for files that are not slate entries.
func ParseEntryName(name string) (e Entry, ok bool) {
	m := entryName.FindStringSubmatch(name)
	if m == nil {
		return Entry{}, false
	}
	e.Slot = Slot(m[1])
	if m[2] != "" {
		e.Counting = true
		e.Left, _ = strconv.Atoi(m[2])
		if m[3] != "" {
			e.Done, _ = strconv.Atoi(m[3])
		}
	}
	return e, true
}

// ParseEntry parses an entry file; name is its file name under loader/entries.
func ParseEntry(name string, data []byte) (*Entry, error) {
	e, ok := ParseEntryName(name)
	if !ok {
		return nil, fmt.Errorf("%s: not a slate boot entry name", name)
	}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, _ := strings.Cut(line, " ")
		val = strings.TrimSpace(val)
		switch key {
		case "title":
			e.Title = val
		case "version":
			g, err := strconv.Atoi(val)
			if err != nil {
				return nil, fmt.Errorf("%s: version %q is not a generation number", name, val)
			}
			e.Generation = g
		case "linux":
			e.Linux = val
		case "initrd":
			e.Initrd = val
		case "efi":
			e.EFI = val
		case "options":
			e.Options = val
		}
	}
	if e.Linux == "" && e.EFI == "" {
		return nil, fmt.Errorf("%s: no linux or efi line", name)
	}
	e.Version = CmdlineValue(e.Options, ArgVersion)
	return &e, nil
}

// CmdlineValue returns the value of key=value in a kernel command line, or "".
// The last occurrence wins, as in the kernel.
func CmdlineValue(cmdline, key string) string {
	v := ""
	for _, f := range strings.Fields(cmdline) {
		k, val, _ := strings.Cut(f, "=")
		if k == key {
			v = val
		}
	}
	return v
}

// StaleCountPath says whether systemd-boot's LoaderBootCountPath (countPath,
// a path such as \loader\entries\slate-b+0-3.conf) names an entry of another
// slot than the one it booted (selected, LoaderEntrySelected: slate-a.conf,
// with or without the counter and .conf). systemd-boot sets the count path
// when it starts a counted entry and does not clear it when that image fails
// to load (a UKI the firmware refused) and the firmware runs systemd-boot
// again, which then boots the other slot uncounted: the path is left over,
// and this boot is not counted. Names that are no slate entry's say nothing.
func StaleCountPath(countPath, selected string) bool {
	counted, ok1 := ParseEntryName(countPath[strings.LastIndexAny(countPath, `\/`)+1:])
	booted, ok2 := ParseEntryName(strings.TrimSuffix(selected, ".conf") + ".conf")
	return ok1 && ok2 && counted.Slot != booted.Slot
}
