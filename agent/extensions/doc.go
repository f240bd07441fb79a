// Package extensions is the node's side of system extensions (sysext):
// fetching the extensions a node config names, and activating them at boot
// so that systemd-sysext merges them into /usr and /opt (see
// ARCHITECTURE.md, "System extensions").
//
// Activation (`slate sysext activate`, slate-sysext.service, early in
// sysinit) takes each entry of the node config's extensions, a name or a
// registry reference, and picks a candidate from the image's store
// (/usr/lib/slate/extensions, trusted because it is in the verity-protected
// root) and the node's store (/var/lib/slate/extensions, on the writable
// state partition, so every candidate from there must pass the update
// policy's signature check, at every boot). The candidate must match the
// running OS's os-release as systemd-sysext decides it (sysext.Match). Its
// image file is attached to a read-only loop device, put under a dm-verity
// device slate-ext-NAME with the root hash from its signed config, read
// once from end to end (a changed byte is an I/O error there: the
// extension is refused and its devices removed), and mounted read-only,
// nodev, nosuid at /run/extensions/NAME, a directory systemd-sysext
// merges. Extensions activated before and no longer named are unmounted and
// their devices removed first; then `systemd-sysext refresh` merges.
// systemd-sysext also merges /var/lib/extensions, which nothing verifies:
// activation hides it under an empty read-only directory when it holds
// anything, and says so.
//
// Activation never fails the boot. Each entry ends merged, refused (a
// candidate exists but none could be used, with the reasons) or missing
// (no candidate at all), on one console line each and in the report
// /run/slate/extensions.json (Report), which `slate status` shows and
// `slate health` judges health.requiredExtensions by.
//
// Everything that touches the system goes through System (loop devices,
// device-mapper, mounts, commands), so the selection, refusal and teardown
// logic is tested with fakes.
package extensions
