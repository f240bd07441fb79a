#!/usr/bin/env bash
# Build a reference node image: Debian by debootstrap, turned into a
# one-layer OCI image layout by ./dir2oci, cached by its inputs.
#
#   qemu-tests/reference/build.sh [-v VARIANT] OUTDIR_LINK   (as root; `make reference-image`)
#
# VARIANT names a file in ./variants (default: reference, the image the QEMU
# suite and the demo use; the others are the reference matrix, `make
# reference-matrix`): its '@suite' line is the Debian suite, its '@prepare'
# line what is done to the tree after debootstrap ('clean' below, or 'none':
# the tree exactly as debootstrap leaves it, as a user's image would be), and
# its other lines the packages.
#
# OUTDIR_LINK (e.g. build/reference) becomes a symlink to the layout in
# ${SLATE_CACHE:-$HOME/.cache/slate}/reference/<key>/oci. The key is the
# sha256 of: the variant file, this script, dir2oci's source, the
# Go version and the versions of the modules dir2oci links. Same key: the cached
# layout is linked and nothing is built (seconds). Downloaded .debs are kept in
# .../reference/debs for the next build.
#
# Environment:
#   SLATE_CACHE     cache root (default $HOME/.cache/slate)
#   DEBIAN_MIRROR   default http://deb.debian.org/debian (not part of the key)
#   KEEP_ROOTFS=1   keep the debootstrap tree as .../<key>/rootfs
#   FORCE=1         rebuild even when the key is cached (e.g. to pick up
#                   security updates: the key does not follow the mirror)
#   CI=true         or stderr not a terminal: no progress, only the result line
#                   (and the log's tail on failure)
#
# '@prepare clean': the tree is made fit for a read-only root, and nothing slate-specific is
# added: /etc/machine-id is an empty file (the init bind-mounts the node's
# persistent machine-id over it, so the file must exist; an empty one is also
# what systemd expects in an image), /var/lib/dbus/machine-id is removed (dbus
# then reads /etc/machine-id), hostname is "slate", /etc/resolv.conf is emptied
# (debootstrap copies the build host's), root has no password (locked "*", as
# debootstrap leaves it), systemd-networkd is enabled; apt lists, /var/cache,
# /var/log, /tmp, /var/tmp and /run are emptied (directories kept), Debian's
# own initrd is not built (slate makes its own initramfs; Debian's would be
# 15 MB of non-reproducible bytes), /etc/shadow's "last changed" days are set
# to SOURCE_DATE_EPOCH. SOURCE_DATE_EPOCH is the newest mtime among the
# packages' changelog.Debian.gz files, i.e. the date of the newest package.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

usage() { echo "usage: $0 [-v VARIANT] OUTDIR_LINK (variants: $(ls "$here/variants" | paste -sd' '))" >&2; exit 2; }
variant=reference
if [[ ${1:-} == -v ]]; then
	[[ $# -ge 2 ]] || usage
	variant=$2
	shift 2
fi
if [[ $# -ne 1 || $1 == -* ]]; then usage; fi
link=$1
vfile=$here/variants/$variant
[[ $variant =~ ^[a-z0-9-]+$ && -f $vfile ]] || { echo "build.sh: no variant '$variant' in $here/variants" >&2; usage; }
directive() { sed -n -e "s/^@$1[[:space:]]\+\([^[:space:]#]*\).*/\1/p" "$vfile" | tail -n 1; }
suite=$(directive suite)
prepare=$(directive prepare)
[[ $suite =~ ^[a-z]+$ ]] || { echo "build.sh: $vfile: no '@suite NAME' line" >&2; exit 2; }
[[ $prepare == clean || $prepare == none ]] || { echo "build.sh: $vfile: '@prepare' must be clean or none" >&2; exit 2; }
cache_root=${SLATE_CACHE:-${HOME:?}/.cache/slate}/reference

interactive=0
if [[ -t 2 && ${CI:-} != true ]]; then interactive=1; fi
say() { if ((interactive)); then printf '\033[1m==> %s\033[0m\n' "$*" >&2; fi; }
die() { echo "build.sh: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

t_start=$(now)
mkdir -p "$cache_root/debs"
cache_root=$(cd "$cache_root" && pwd)

# --- the key ---------------------------------------------------------------
key_text() {
	(
		cd "$repo"
		sha256sum "qemu-tests/reference/variants/$variant" qemu-tests/reference/build.sh
		find qemu-tests/reference/dir2oci -maxdepth 1 -name '*.go' ! -name '*_test.go' -print0 |
			LC_ALL=C sort -z | xargs -0 sha256sum
		echo "go $(go env GOVERSION)"
		go list -deps -f '{{with .Module}}{{.Path}} {{.Version}}{{end}}' ./qemu-tests/reference/dir2oci | LC_ALL=C sort -u
		echo "suite $suite"
	)
}
keytxt=$(key_text)
key=$(printf '%s\n' "$keytxt" | sha256sum | cut -c1-16)
dir=$cache_root/$key

relink() {
	mkdir -p "$(dirname "$link")"
	if [[ -e $link && ! -L $link ]]; then die "$link exists and is not a symlink"; fi
	local tmp
	tmp="$(dirname "$link")/.$(basename "$link").$$"
	ln -sfnT "$dir/oci" "$tmp"
	mv -fT "$tmp" "$link"
	echo "reference image: $link -> $dir/oci"
}

# One build at a time per cache; a second caller waits, then finds the result.
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
	say "another build holds $cache_root/.lock; waiting"
	flock 9
fi

if [[ -f $dir/complete && -f $dir/oci/index.json && ${FORCE:-} != 1 ]]; then
	say "cached: $key"
	relink
	exit 0
fi

# --- build -------------------------------------------------------------------
[[ $(id -u) == 0 ]] || die "debootstrap needs root (key $key is not cached in $cache_root)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

mounts_under() { awk -v r="$1" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts; }
# Remove a directory that may hold a (debootstrap) tree, never crossing into a
# mount: a killed debootstrap leaves /proc and /sys mounted in its target.
remove_tree() {
	[[ -e $1 ]] || return 0
	if [[ -n $(mounts_under "$1") ]]; then
		umount -R $(mounts_under "$1" | sort -r) 2>/dev/null || true
		if [[ -n $(mounts_under "$1") ]]; then
			echo "build.sh: not deleting $1: still mounted: $(mounts_under "$1")" >&2
			return 1
		fi
	fi
	rm -rf --one-file-system "$1"
}
# We hold the lock, so any build directory left here is from a killed build.
for stale in "$cache_root"/.build-* "$cache_root"/.old-*; do
	[[ -e $stale ]] || continue
	say "removing $stale (left by an interrupted build)"
	remove_tree "$stale" || true
done

work=$(mktemp -d "$cache_root/.build-$key.XXXXXX")
chmod 0755 "$work" # mktemp made it 0700
rootfs=$work/rootfs
log=$work/build.log
ok=0

remove_rootfs() { remove_tree "$rootfs"; }
on_exit() {
	local rc=$?
	if ((!ok)); then
		if [[ -f $log ]]; then
			cp "$log" "$cache_root/last-failed-build.log"
			if ((!interactive)); then tail -n 40 "$log" >&2; fi
			echo "build.sh: failed (exit $rc); log: $cache_root/last-failed-build.log" >&2
		fi
		if [[ ${KEEP_ROOTFS:-} == 1 && -d $rootfs ]]; then
			echo "build.sh: KEEP_ROOTFS=1: the tree is left in $rootfs" >&2
		else
			remove_rootfs && rm -rf "$work"
		fi
	fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM HUP

# run CMD...: output to the terminal and the log, or to the log only.
run() {
	if ((interactive)); then
		"$@" 2>&1 | tee -a "$log"
	else
		"$@" >>"$log" 2>&1
	fi
}
# A clean, fixed environment for everything that runs in or on the tree.
clean_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive)
in_root() { "${clean_env[@]}" chroot "$rootfs" "$@"; }

printf '%s\n' "$keytxt" >"$work/key.txt"
pkgs=$(sed -e 's/#.*//' -e '/^@/d' -e 's/[[:space:]]//g' -e '/^$/d' "$vfile" | paste -sd, -)
[[ -n $pkgs ]] || die "no packages in $vfile"

say "debootstrap $suite ($variant, $key): $pkgs"
t0=$(now)
# INITRD=No: Debian's kernel hook then builds no initrd (see the header); a
# tree left as debootstrap leaves it keeps Debian's own.
initrd=()
if [[ $prepare == clean ]]; then initrd=(INITRD=No); fi
run "${clean_env[@]}" "${initrd[@]}" debootstrap --variant=minbase --merged-usr --include="$pkgs" \
	--cache-dir="$cache_root/debs" "$suite" "$rootfs" "$mirror"
t_debootstrap=$(since "$t0")
[[ -z $(mounts_under "$rootfs") ]] || die "debootstrap left mounts under $rootfs: $(mounts_under "$rootfs")"

say "preparing the tree ($prepare)"
t0=$(now)
in_root dpkg-query -W -f '${Package} ${Version} ${Architecture}\n' >"$work/packages.lock"
if [[ $prepare == clean ]]; then
run in_root systemctl enable systemd-networkd.service
in_root apt-get clean

(
	cd "$rootfs"
	# What the mirror and the install left behind: caches, logs, runtime state.
	find var/lib/apt/lists var/cache var/log tmp var/tmp run -mindepth 1 ! -type d -delete
	find tmp var/tmp run -mindepth 1 -depth -type d -delete
	rm -f var/lib/dpkg/*-old var/cache/debconf/*-old
	find . -xdev -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -xdev -name '*.pyc' -type f -delete
	rm -f boot/initrd.img-* initrd.img initrd.img.old
	# Identity: none in the image; the init supplies the machine-id.
	: >etc/machine-id
	rm -f var/lib/dbus/machine-id
	echo slate >etc/hostname
	: >etc/resolv.conf
	chmod 0644 etc/hostname etc/resolv.conf # debootstrap copied the host's, mode and all
)
fi
# The newest package's date: dpkg keeps the .debs' mtimes, which Debian's
# reproducible builds set from each package's changelog.
epoch=$(find "$rootfs/usr/share/doc" -name changelog.Debian.gz -type f -printf '%T@\n' | sort -n | tail -n 1)
epoch=${epoch%.*}
[[ $epoch =~ ^[0-9]+$ && $epoch -gt 1600000000 ]] || die "cannot derive SOURCE_DATE_EPOCH (got '$epoch')"
days=$((epoch / 86400))
if [[ $prepare == clean ]]; then
	sed -i -E "s/^([^:]*:[^:]*:)[0-9]+:/\1$days:/" "$rootfs/etc/shadow" "$rootfs/etc/shadow-"
fi
kvers=$(ls "$rootfs/usr/lib/modules")
t_prepare=$(since "$t0")

say "converting to an OCI layout (SOURCE_DATE_EPOCH=$epoch, $(date -u -d "@$epoch" +%F))"
t0=$(now)
[[ -z $(mounts_under "$rootfs") ]] || die "mounts under $rootfs: $(mounts_under "$rootfs")"
progress=()
if ((interactive)); then progress=(-progress); fi
(cd "$repo" && go run ./qemu-tests/reference/dir2oci -epoch "$epoch" -o "$work/oci" "${progress[@]}" \
	-created-by "debootstrap --variant=minbase $suite + qemu-tests/reference/variants/$variant" "$rootfs") \
	>"$work/dir2oci.txt" 2> >(tee -a "$log" >&2)
t_convert=$(since "$t0")

prepared=true
if [[ $prepare == none ]]; then prepared=false; fi
(cd "$repo" && go run ./qemu-tests/reference/check -prepared=$prepared "$work/oci") >"$work/check.txt" 2> >(tee -a "$log" >&2)

if [[ ${KEEP_ROOTFS:-} != 1 ]]; then
	remove_rootfs
fi
layout_bytes=$(du -sb "$work/oci" | cut -f1)
cat >"$work/build-info.txt" <<EOF
key $key
variant $variant
suite $suite
prepare $prepare
mirror $mirror
source_date_epoch $epoch
kernel $kvers
built_at $(date -u +%FT%TZ)
debootstrap_seconds $t_debootstrap
prepare_seconds $t_prepare
convert_seconds $t_convert
layout_bytes $layout_bytes
$(cat "$work/dir2oci.txt")
EOF
touch "$work/complete"

if [[ -e $dir ]]; then
	old=$(mktemp -d "$cache_root/.old-$key.XXXXXX")
	mv -T "$dir" "$old/d"
	remove_tree "$old"
fi
mv -T "$work" "$dir"
ok=1
if [[ ${KEEP_ROOTFS:-} == 1 ]]; then say "tree kept in $dir/rootfs"; fi
say "built in $(since "$t_start") s (debootstrap ${t_debootstrap} s, convert ${t_convert} s, layout $((layout_bytes / 1000000)) MB)"
relink
