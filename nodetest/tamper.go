package nodetest

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os/exec"
	"regexp"
	"strings"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/gpt"
)

func tamperScenario(ctx context.Context, s *session) error {
	cfg, err := s.config(configOpts{})
	if err != nil {
		return err
	}
	n, err := s.start(ctx, "", cfg, s.script(upgradeScript))
	if err != nil {
		return err
	}
	first, err := s.upgradeBoot(ctx, n)
	if err != nil {
		return err
	}
	// V2 is in slot b and its entry is on trial. Change one byte of its
	// root before it ever boots.
	where, err := tamper(n.m.Disk(), boot.SlotB)
	if err != nil {
		return fmt.Errorf("changing a byte of slot b: %w", err)
	}
	var refused string
	b, trials, err := n.backToV1(first, func(b *bootRun) error {
		if b.Script != nil {
			return fmt.Errorf("%s with a changed byte at %s reached the test runner: the node served from a tampered slot", b, where)
		}
		for _, l := range b.Lines {
			if strings.Contains(l, "verity") && strings.Contains(l, "corrupt") && refused == "" {
				refused = strings.TrimSpace(l)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.healthy(b); err != nil {
		return err
	}
	st, err := b.status()
	if err != nil {
		return err
	}
	if i := slotInfo(st, "b"); i != nil && i.State == "good" {
		return fmt.Errorf("%s: the tampered slot b is %s", b, describeSlot(i))
	}
	if trials == 0 {
		s.note("slot b (changed at %s) never booted: systemd-boot went to V1 at once", where)
	} else {
		s.note("slot b, changed at %s, was refused on each of its %d tries (%s); V1 runs, slot b %s", where, trials, refused, describeSlot(slotInfo(st, "b")))
	}
	return nil
}

// tamper changes one byte of slot's root on disk (a qcow2 overlay, which
// qemu-io reads and writes): a byte every boot reads, in the inode table's
// metadata block holding the squashfs root directory's inode (a byte in a
// file's data would be refused only when that file is read). It says where.
func tamper(disk string, slot boot.Slot) (string, error) {
	d := qemuDisk(disk)
	t, err := gpt.Read(d, 512)
	if err != nil {
		return "", err
	}
	var start int64 = -1
	for _, p := range t.Partitions {
		if p.Name == slot.PartitionName() {
			start = int64(p.FirstLBA) * 512
		}
	}
	if start < 0 {
		return "", fmt.Errorf("%s: no partition %s", disk, slot.PartitionName())
	}
	sb := make([]byte, 96)
	if _, err := d.ReadAt(sb, start); err != nil {
		return "", err
	}
	if string(sb[:4]) != "hsqs" {
		return "", fmt.Errorf("%s: %s holds no squashfs (%q)", disk, slot.PartitionName(), sb[:4])
	}
	le := binary.LittleEndian
	rootInode, inodeTable := le.Uint64(sb[32:]), le.Uint64(sb[64:])
	off := start + int64(inodeTable+rootInode>>16+2)
	b := make([]byte, 1)
	if _, err := d.ReadAt(b, off); err != nil {
		return "", err
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P 0x%02x %d 1", b[0]^0xff, off), disk).CombinedOutput(); err != nil {
		return "", fmt.Errorf("qemu-io: %v: %s", err, out)
	}
	return fmt.Sprintf("byte %d of %s", off-start, slot.PartitionName()), nil
}

// qemuDisk reads a qcow2 disk through qemu-io.
type qemuDisk string

var dumpRe = regexp.MustCompile(`^[0-9a-f]{8}:\s+((?:[0-9a-f]{2} ?)+)`)

func (d qemuDisk) ReadAt(p []byte, off int64) (int, error) {
	out, err := exec.Command("qemu-io", "-r", "-f", "qcow2", "-c", fmt.Sprintf("read -v %d %d", off, len(p)), string(d)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("qemu-io: %v: %s", err, out)
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		g := dumpRe.FindStringSubmatch(l)
		if g == nil {
			continue
		}
		b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(g[1]), " ", ""))
		if err != nil {
			return n, fmt.Errorf("qemu-io's dump: %q: %v", l, err)
		}
		n += copy(p[n:], b)
	}
	if n != len(p) {
		return n, fmt.Errorf("qemu-io read %d of %d bytes at %d", n, len(p), off)
	}
	return n, nil
}
