package run_test

// A smoke test of the whole init under QEMU, without the builder: a real
// kernel, the packer's initramfs with a fresh build of cmd/slate-init, and a
// hand-made GPT disk whose root slot holds a tiny squashfs (the host's
// e2fsprogs and a static test program as /sbin/init). It boots twice (first
// boot: grow, mkfs, /var copy; second boot: fsck, same machine ID) and then
// checks that a damaged state partition and a missing partition end in a
// plain message and, as this machine has no UEFI to count failures in, a
// stop rather than a reboot (the reboot-once policy is qemu-tests/boot's).
//
// It takes the kernel from SLATE_SMOKE_KERNEL, an unpacked kernel package
// (a directory with boot/vmlinuz-<kver>, boot/config-<kver> and
// lib/modules/<kver>/ with modules.dep), e.g.:
//
//	apt-get download linux-image-6.1.0-54-cloud-amd64
//	dpkg-deb -x linux-image-*.deb /tmp/k && depmod -b /tmp/k 6.1.0-54-cloud-amd64
//	SLATE_SMOKE_KERNEL=/tmp/k go test -run QEMU -v ./initramfs/init/run/
//
// or else from the reference image's OCI layout named by SLATE_REFERENCE
// (as make test sets it). With neither it is skipped.
//
// The full boot of a real image with systemd is the QEMU suite's job
// (qemu-tests/).

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/initramfs"
	"github.com/slate-os/slate/initramfs/internal/initbuild"
	"github.com/slate-os/slate/internal/testtool"
)

const (
	smokeRoot  = "2B1E6D3A-0C4F-4E8A-9B7D-5A6C3E2F1D0B"
	smokeState = "7C9A1B2D-3E4F-4A5B-8C6D-9E0F1A2B3C4D"
)

// smokeHash is the root hash of the smoke test's slot, set once its tree is built.
var smokeHash string

// guestInit is the image's /sbin/init: it reports what it sees and powers off.
const guestInit = `package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

func check(name string, err error) {
	if err != nil {
		fmt.Printf("SMOKE %s: %v\n", name, err)
	} else {
		fmt.Printf("SMOKE %s: ok\n", name)
	}
}

func main() {
	fmt.Printf("SMOKE pid=%d args=%q\n", os.Getpid(), os.Args)
	rec, err := os.ReadFile("/run/slate/boot.json")
	check("record", err)
	fmt.Printf("SMOKE-RECORD %s\n", strings.ReplaceAll(string(rec), "\n", " "))
	mid, _ := os.ReadFile("/etc/machine-id")
	vmid, _ := os.ReadFile("/var/lib/slate/machine-id")
	fmt.Printf("SMOKE machine-id=%s var=%s\n", strings.TrimSpace(string(mid)), strings.TrimSpace(string(vmid)))
	m, _ := os.ReadFile("/proc/mounts")
	for _, l := range strings.Split(string(m), "\n") {
		f := strings.Fields(l)
		if len(f) > 3 && (f[1] == "/" || f[1] == "/etc" || f[1] == "/var" || f[1] == "/tmp" || f[1] == "/run" || f[1] == "/dev" || f[1] == "/proc" || f[1] == "/sys") {
			fmt.Printf("SMOKE mount %s %s %s\n", f[1], f[2], f[3])
			if f[1] == "/" {
				fmt.Printf("SMOKE root-source=%s\n", f[0])
			}
		}
	}
	check("write-etc", os.WriteFile("/etc/smoke", []byte("x"), 0o644))
	check("write-tmp", os.WriteFile("/tmp/smoke", []byte("x"), 0o644))
	check("write-usr", os.WriteFile("/usr/smoke", []byte("x"), 0o644))
	check("write-root", os.WriteFile("/smoke", []byte("x"), 0o644))
	old, _ := os.ReadFile("/var/boots")
	check("write-var", os.WriteFile("/var/boots", append(old, 'x'), 0o644))
	fmt.Printf("SMOKE boots=%d\n", len(old)+1)
	_, err = os.Stat("/var/lib/image/hello")
	check("image-var", err)
	var st syscall.Stat_t
	if err := syscall.Lstat("/var/lib/image/suid", &st); err == nil {
		fmt.Printf("SMOKE suid-mode=%o\n", st.Mode&0o7777)
	}
	_, err = os.Stat("/etc/.updated")
	check("etc-updated", err)
	_, err = os.Stat("/run/initramfs/fsck-root")
	check("fsck-root", err)
	panicSetting, _ := os.ReadFile("/proc/sys/kernel/panic")
	fmt.Printf("SMOKE kernel.panic=%s\n", strings.TrimSpace(string(panicSetting)))
	utab, _ := os.ReadFile("/run/mount/utab")
	fmt.Printf("SMOKE utab %s\n", strings.TrimSpace(string(utab)))
	_, err = os.Stat("/init")
	fmt.Printf("SMOKE initramfs-visible=%v\n", err == nil)
	// The node config's effects.
	hn, _ := os.ReadFile("/etc/hostname")
	fmt.Printf("SMOKE hostname-file=%s\n", strings.TrimSpace(string(hn)))
	motd, err := os.ReadFile("/etc/motd")
	fmt.Printf("SMOKE motd=%q %v\n", motd, err)
	_, err = os.Stat("/run/slate/config.json")
	check("config-json", err)
	runMounts, driveMounts := 0, 0
	for _, l := range strings.Split(string(m), "\n") {
		f := strings.Fields(l)
		if len(f) > 3 && f[1] == "/run" {
			runMounts++
		}
		if len(f) > 3 && (f[2] == "vfat" || f[2] == "iso9660") {
			driveMounts++
		}
	}
	fmt.Printf("SMOKE run-mounts=%d drive-mounts=%d\n", runMounts, driveMounts)
	fmt.Println("SMOKE end")
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
}
`

func sh(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func TestQEMUSmoke(t *testing.T) {
	kdir := os.Getenv("SLATE_SMOKE_KERNEL")
	ref := os.Getenv("SLATE_REFERENCE")
	if kdir == "" && ref == "" {
		t.Skip("neither SLATE_SMOKE_KERNEL nor SLATE_REFERENCE is set (see the file's comment)")
	}
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	testtool.Need(t, "qemu-system-x86_64", "mksquashfs", "sgdisk", "mke2fs", "e2fsck", "ldd")
	work := t.TempDir()
	if kdir == "" {
		kdir = filepath.Join(work, "kernel")
		if err := extractKernel(ref, kdir); err != nil {
			t.Fatalf("kernel from %s: %v", ref, err)
		}
	}

	// Kernel.
	vmlinuz, _ := filepath.Glob(filepath.Join(kdir, "boot", "vmlinuz-*"))
	if len(vmlinuz) != 1 {
		t.Fatalf("no single vmlinuz in %s/boot", kdir)
	}
	kver := strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-")
	modDir := filepath.Join(kdir, "lib", "modules", kver)
	dep, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		t.Fatalf("%v (run depmod -b %s %s)", err, kdir, kver)
	}
	builtin, _ := os.ReadFile(filepath.Join(modDir, "modules.builtin"))
	readOpt := func(name string) []byte { b, _ := os.ReadFile(filepath.Join(modDir, name)); return b }
	config, _ := os.ReadFile(filepath.Join(kdir, "boot", "config-"+kver))

	// Initramfs with a fresh init.
	root, err := initbuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	initBin, err := initbuild.Build(root)
	if err != nil {
		t.Fatal(err)
	}
	var initrd bytes.Buffer
	info, err := initramfs.Build(&initrd, initramfs.Input{
		Init: initBin, KernelRelease: kver, KernelConfig: config,
		ModulesDep: dep, ModulesBuiltin: builtin, Modules: initramfs.DefaultModules,
		ModulesSoftdep: readOpt("modules.softdep"), ModulesWeakdep: readOpt("modules.weakdep"),
		ModulesAlias: readOpt("modules.alias"), ModulesBuiltinModinfo: readOpt("modules.builtin.modinfo"),
		OpenModule: func(rel string) (io.ReadCloser, error) { return os.Open(filepath.Join(modDir, rel)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("initramfs: %d bytes %s (cpio %d), init %d bytes, modules %v, built in %v", info.Size, info.Compression, info.CPIOSize, len(initBin), info.Modules, info.Builtin)
	initrdPath := filepath.Join(work, "initramfs")
	os.WriteFile(initrdPath, initrd.Bytes(), 0o644)

	// Root filesystem.
	rootfs := filepath.Join(work, "rootfs")
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "usr/sbin", "usr/lib", "var/lib/image", "var/log", "sbin"} {
		os.MkdirAll(filepath.Join(rootfs, d), 0o755)
	}
	syscall.Chmod(filepath.Join(rootfs, "tmp"), 0o1777)
	os.WriteFile(filepath.Join(rootfs, "var/lib/image/hello"), []byte("from the image\n"), 0o644)
	os.WriteFile(filepath.Join(rootfs, "var/lib/image/suid"), []byte("x"), 0o4755)
	syscall.Chmod(filepath.Join(rootfs, "var/lib/image/suid"), 0o4755)
	os.Symlink("/run", filepath.Join(rootfs, "var/run"))
	os.WriteFile(filepath.Join(rootfs, "etc/machine-id"), []byte("uninitialized\n"), 0o444)
	os.WriteFile(filepath.Join(rootfs, "etc/hostname"), []byte("smoke\n"), 0o644)
	if b, err := os.ReadFile("/etc/mke2fs.conf"); err == nil {
		os.WriteFile(filepath.Join(rootfs, "etc/mke2fs.conf"), b, 0o644)
	}
	// The host's e2fsprogs and their libraries.
	for _, tool := range []string{"mke2fs", "e2fsck"} {
		p := testtool.Path(t, tool)
		copyFileTo(t, p, filepath.Join(rootfs, "usr/sbin", tool))
		out, _ := exec.Command("ldd", p).Output()
		for _, line := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "/") {
					real, _ := filepath.EvalSymlinks(f)
					copyFileTo(t, real, filepath.Join(rootfs, f))
				}
			}
		}
	}
	os.Symlink("mke2fs", filepath.Join(rootfs, "usr/sbin/mkfs.ext4"))
	// /sbin/init.
	gdir := filepath.Join(work, "guest")
	os.MkdirAll(gdir, 0o755)
	os.WriteFile(filepath.Join(gdir, "go.mod"), []byte("module guest\n\ngo 1.21\n"), 0o644)
	os.WriteFile(filepath.Join(gdir, "main.go"), []byte(guestInit), 0o644)
	cmd := exec.Command("go", "build", "-o", filepath.Join(rootfs, "usr/sbin/guest-init"), ".")
	cmd.Dir = gdir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the guest init: %v\n%s", err, out)
	}
	os.Symlink("/usr/sbin/guest-init", filepath.Join(rootfs, "sbin/init"))
	sqfs := filepath.Join(work, "root.sqfs")
	sh(t, work, "mksquashfs", rootfs, sqfs, "-comp", "zstd", "-noappend", "-quiet", "-all-root")
	// The verity tree after the squashfs (padded to 4 KiB), as the builder lays out a slot.
	sqf, err := os.OpenFile(sqfs, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	sqi, _ := sqf.Stat()
	dataSize := (sqi.Size() + verity.BlockSize - 1) / verity.BlockSize * verity.BlockSize
	sqf.Truncate(dataSize)
	tree, err := verity.Build(io.NewSectionReader(sqf, 0, dataSize), dataSize, []byte("smoke salt"), [16]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	sqf.Seek(dataSize, io.SeekStart)
	if _, err := tree.WriteTo(sqf); err != nil {
		t.Fatal(err)
	}
	sqf.Close()
	smokeHash = tree.RootHashHex()
	sq, _ := os.Stat(sqfs)

	// Disk: esp, root a (the squashfs), root b, state (marker); then the
	// disk is made larger than the table, as when an image is written to a bigger disk.
	disk := filepath.Join(work, "disk.img")
	os.WriteFile(disk, nil, 0o644)
	os.Truncate(disk, 128<<20)
	rootMiB := sq.Size()>>20 + 2
	sh(t, work, "sgdisk", "-o",
		"-n", "1:2048:+4M", "-t", "1:"+boot.TypeESP, "-c", "1:"+boot.PartESP,
		"-n", fmt.Sprintf("2:0:+%dM", rootMiB), "-t", "2:"+boot.TypeRootX8664, "-c", "2:"+boot.SlotA.PartitionName(), "-u", "2:"+smokeRoot,
		"-n", fmt.Sprintf("3:0:+%dM", rootMiB), "-t", "3:"+boot.TypeRootX8664, "-c", "3:"+boot.SlotB.PartitionName(),
		"-n", "4:0:+16M", "-t", "4:"+boot.TypeVar, "-c", "4:"+boot.PartState, "-u", "4:"+smokeState,
		disk)
	writeAtLBA(t, disk, sqfs, 2048+4*2048)
	stateLBA := int64(2048 + 4*2048 + 2*rootMiB*2048)
	writeBytesAt(t, disk, []byte(boot.StateUnformatted), stateLBA*512)
	os.Truncate(disk, 512<<20)

	cmdline := "console=ttyS0 slate.slot=a slate.root=" + smokeRoot + " slate.state=" + smokeState +
		" slate.roothash=" + smokeHash + " slate.version=smoke-1 slate.reboot_delay=1s -- extra-arg"

	// First boot.
	out1 := qemu(t, work, vmlinuz[0], initrdPath, disk, cmdline, "boot1")
	rec1 := checkBoot(t, out1, true)
	if !rec1.StateGrown || !rec1.StatePopulated || rec1.StateFsck != -1 {
		t.Errorf("first boot record: %+v", rec1)
	}
	// Second boot.
	out2 := qemu(t, work, vmlinuz[0], initrdPath, disk, cmdline, "boot2")
	rec2 := checkBoot(t, out2, false)
	if rec2.StateGrown || rec2.StatePopulated || rec2.StateFsck != 0 {
		t.Errorf("second boot record: %+v", rec2)
	}
	mid := func(out string) string {
		for _, l := range strings.Split(out, "\n") {
			if i := strings.Index(l, "SMOKE machine-id="); i >= 0 {
				return strings.Fields(l[i+len("SMOKE machine-id="):])[0]
			}
		}
		return ""
	}
	if m1, m2 := mid(out1), mid(out2); m1 == "" || m1 != m2 {
		t.Errorf("machine ID changed across boots: %q -> %q", m1, m2)
	}
	if !strings.Contains(out2, "SMOKE utab SRC=/dev/vda4 TARGET=/var ROOT=/ OPTS=x-initrd.mount") {
		t.Error("/var is not marked x-initrd.mount in /run/mount/utab")
	}
	if !strings.Contains(out2, "SMOKE boots=2") {
		t.Error("/var did not persist across boots")
	}
	for i, rec := range []*record.Record{rec1, rec2} {
		if rec.Config == nil || rec.Config.Source != record.ConfigNone || rec.Config.Applied {
			t.Errorf("boot %d: config record %+v", i+1, rec.Config)
		}
	}
	if !strings.Contains(out2, "slate-init: no node config found (looked in cmdline, fw_cfg, config-drive, nocloud, openstack, ec2, gce, azure): booting with the image's defaults") ||
		!strings.Contains(out2, "SMOKE hostname-file=smoke") {
		t.Error("boot without a config: no console line, or the hostname changed")
	}

	testConfigSources(t, work, vmlinuz[0], initrdPath, disk, cmdline)

	// Damaged state: garbage where the filesystem was. Plain message; no
	// UEFI (this machine boots the kernel directly): nowhere to count
	// failures, so the init stops instead of rebooting.
	const noUEFI = "; not rebooting: this boot is not counted (no boot-counting try to spend) and there is nowhere to keep the failure"
	writeBytesAt(t, disk, bytes.Repeat([]byte("garbage!"), 1024), stateLBA*512)
	out3 := qemu(t, work, vmlinuz[0], initrdPath, disk, cmdline, "damaged")
	if !strings.Contains(out3, "slate-init: FATAL: state: state partition /dev/vda4 (PARTUUID "+smokeState+") is damaged: will not format it") ||
		!strings.Contains(out3, noUEFI) || strings.Contains(out3, "SMOKE") || strings.Contains(out3, "rebooting in") {
		t.Errorf("damaged state: console:\n%s", tail(out3, 30))
	}
	// A missing partition: the wait times out.
	out4 := qemu(t, work, vmlinuz[0], initrdPath, disk, strings.Replace(cmdline, smokeRoot, "2B1E6D3A-0C4F-4E8A-9B7D-000000000000", 1), "missing")
	if !strings.Contains(out4, "FATAL: find-partitions: slot a: no partition with PARTUUID 2B1E6D3A-0C4F-4E8A-9B7D-000000000000 after 10s"+noUEFI) {
		t.Errorf("missing root: console:\n%s", tail(out4, 30))
	}
	// No root hash: the root is not mounted unverified.
	out5 := qemu(t, work, vmlinuz[0], initrdPath, disk, strings.Replace(cmdline, " slate.roothash="+smokeHash, "", 1), "no-roothash")
	if !strings.Contains(out5, "FATAL: mount-root: slot a: no slate.roothash= on the kernel command line") || !strings.Contains(out5, noUEFI) || strings.Contains(out5, "SMOKE") {
		t.Errorf("no root hash: console:\n%s", tail(out5, 30))
	}
	// A wrong root hash: the mount's first read fails verification and the kernel restarts.
	bad := strings.Repeat("0", len(smokeHash))
	out6 := qemu(t, work, vmlinuz[0], initrdPath, disk, strings.Replace(cmdline, smokeHash, bad, 1), "wrong-roothash")
	if !regexp.MustCompile(`device-mapper: verity: .*(data|metadata) block \d+ is corrupted`).MatchString(out6) || strings.Contains(out6, "SMOKE") {
		t.Errorf("wrong root hash: console:\n%s", tail(out6, 30))
	}
	// One modified byte in the squashfs (in its first block, which the
	// mount reads): the kernel refuses the block and restarts.
	rootOff := int64(2048+4*2048) * 512
	writeBytesAt(t, disk, []byte{0xa5}, rootOff+1000)
	out7 := qemu(t, work, vmlinuz[0], initrdPath, disk, cmdline, "modified-root")
	if !regexp.MustCompile(`device-mapper: verity: .*data block 0 is corrupted`).MatchString(out7) || strings.Contains(out7, "SMOKE") {
		t.Errorf("modified root: console:\n%s", tail(out7, 30))
	}
}

func checkBoot(t *testing.T, out string, first bool) *record.Record {
	t.Helper()
	for _, want := range []string{
		"SMOKE pid=1 args=[\"/sbin/init\" \"extra-arg\"]",
		"SMOKE record: ok", "SMOKE write-etc: ok", "SMOKE write-tmp: ok", "SMOKE write-var: ok",
		"SMOKE write-usr: open /usr/smoke: read-only file system",
		"SMOKE write-root: open /smoke: read-only file system",
		"SMOKE image-var: ok", "SMOKE suid-mode=4755", "SMOKE etc-updated: ok", "SMOKE fsck-root: ok",
		"SMOKE mount / squashfs ro", "SMOKE mount /etc overlay rw", "SMOKE mount /var ext4 rw", "SMOKE mount /tmp tmpfs rw",
		"SMOKE mount /run tmpfs rw", "SMOKE mount /dev devtmpfs rw", "SMOKE root-source=/dev/mapper/slate-root",
		"SMOKE initramfs-visible=false", "SMOKE end",
		"SMOKE kernel.panic=0", // the init's panic reboot is disarmed before the handover
	} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	var rec *record.Record
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "SMOKE-RECORD "); i >= 0 {
			r, err := record.Parse([]byte(l[i+len("SMOKE-RECORD "):]))
			if err != nil {
				t.Fatalf("record: %v", err)
			}
			rec = r
		}
	}
	if rec == nil {
		t.Fatalf("no record; console:\n%s", tail(out, 60))
	}
	b, _ := json.Marshal(rec)
	t.Logf("record: %s", b)
	if rec.Slot != "a" || rec.Version != "smoke-1" || rec.RootHash != smokeHash || rec.RootDevice != "/dev/vda2" ||
		rec.StateDevice != "/dev/vda4" || rec.FirstBoot != first || rec.Error != "" || len(rec.Modules) == 0 || !rec.Verity {
		t.Errorf("record: %+v", rec)
	}
	if t.Failed() {
		t.Logf("console:\n%s", tail(out, 80))
	}
	return rec
}

func qemu(t *testing.T, work, kernel, initrd, disk, cmdline, name string, extra ...string) string {
	t.Helper()
	log := filepath.Join(work, name+".log")
	args := []string{"-machine", "q35", "-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2", "-m", "1024",
		"-display", "none", "-serial", "file:" + log, "-monitor", "none", "-nic", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
		"-drive", "file=" + disk + ",if=virtio,format=raw"}
	args = append(args, extra...)
	cmd := exec.Command("qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done, exited := make(chan error, 1), make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	// An init that stops (it will not reboot) waits forever: once it says
	// so, and is still there a little later, QEMU is ended.
	stopped := make(chan struct{})
	go func() {
		for {
			select {
			case <-exited:
				return
			case <-time.After(500 * time.Millisecond):
			}
			if b, _ := os.ReadFile(log); bytes.Contains(b, []byte("; not rebooting: ")) {
				time.Sleep(3 * time.Second)
				close(stopped)
				return
			}
		}
	}()
	select {
	case <-stopped:
		cmd.Process.Kill()
		<-done
	case err := <-done:
		if err != nil {
			t.Errorf("qemu %s: %v %s", name, err, stderr.String())
		}
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Errorf("qemu %s: timed out", name)
	}
	b, _ := os.ReadFile(log)
	t.Logf("%s: %s", name, time.Since(start).Round(time.Millisecond))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "slate-init:") || strings.Contains(l, "reboot:") {
			t.Logf("  %s", strings.TrimSpace(l))
		}
	}
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func copyFileTo(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(src)
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.WriteFile(dst, b, st.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}

func writeAtLBA(t *testing.T, disk, src string, lba int64) {
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeBytesAt(t, disk, b, lba*512)
}

func writeBytesAt(t *testing.T, disk string, b []byte, off int64) {
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// extractKernel copies the kernel, its config and its modules out of the
// first image of an OCI layout (gzip or plain tar layers, in order).
func extractKernel(layout, dst string) error {
	readJSON := func(p string, v any) error {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, v)
	}
	blob := func(digest string) string {
		algo, hex, _ := strings.Cut(digest, ":")
		return filepath.Join(layout, "blobs", algo, hex)
	}
	var index struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	if err := readJSON(filepath.Join(layout, "index.json"), &index); err != nil {
		return err
	}
	if len(index.Manifests) == 0 {
		return fmt.Errorf("no manifest in index.json")
	}
	var manifest struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := readJSON(blob(index.Manifests[0].Digest), &manifest); err != nil {
		return err
	}
	for _, l := range manifest.Layers {
		if err := extractLayer(blob(l.Digest), dst); err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
	}
	// bootc-style images keep the kernel beside the modules.
	if m, _ := filepath.Glob(filepath.Join(dst, "boot", "vmlinuz-*")); len(m) == 0 {
		ks, _ := filepath.Glob(filepath.Join(dst, "lib", "modules", "*", "vmlinuz"))
		for _, k := range ks {
			kver := filepath.Base(filepath.Dir(k))
			os.MkdirAll(filepath.Join(dst, "boot"), 0o755)
			os.Rename(k, filepath.Join(dst, "boot", "vmlinuz-"+kver))
		}
	}
	return nil
}

func extractLayer(file, dst string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	magic := make([]byte, 2)
	if _, err := f.ReadAt(magic, 0); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return err
		}
		defer gz.Close()
		r = gz
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		// usr/lib/modules and lib/modules land in lib/modules (merged /usr).
		switch {
		case strings.HasPrefix(name, "boot/vmlinuz-"), strings.HasPrefix(name, "boot/config-"):
		case strings.HasPrefix(name, "usr/lib/modules/"):
			name = strings.TrimPrefix(name, "usr/")
		case strings.HasPrefix(name, "lib/modules/"):
		default:
			continue
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		out := filepath.Join(dst, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		w, err := os.Create(out)
		if err != nil {
			return err
		}
		_, err = io.Copy(w, tr)
		w.Close()
		if err != nil {
			return err
		}
	}
}
