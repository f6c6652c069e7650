#!/bin/bash
# run-in-vm.sh: run a command inside a throw-away Linux VM (QEMU TCG, emulated AMD SVM)
# that has a working /dev/kvm, with this machine's root filesystem shared read-write.
#
# Usage: run-in-vm.sh [options] -- command [args...]
# See tests/nested/README.md for the details, exit codes and pitfalls.
set -euo pipefail

prog=${0##*/}

usage() {
	cat <<EOF
Usage: $prog [options] -- command [args...]

Boots a Debian kernel under qemu-system-x86_64 (TCG, -cpu max: emulated SVM+NPT),
loads kvm_amd so /dev/kvm exists, mounts this machine's / (virtio-9p, read-write),
and runs the command as root in the current directory. Its stdout and stderr are
streamed to ours; we exit with its exit code.

Options:
  --timeout SECONDS   kill the VM after SECONDS (whole run, boot included); exit 124
  --env NAME[=VALUE]  pass NAME into the VM (value taken from our environment when
                      no =VALUE is given); repeatable. LANG, LC_ALL, TERM, TZ and
                      CI are passed when set. PATH is NOT passed (the VM uses
                      /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin);
                      use --env PATH to pass it.
  --mem SIZE          guest memory (qemu -m syntax), default ${VMMD_NESTED_MEM:-4G}
  --smp N             guest vCPUs, default ${VMMD_NESTED_SMP:-2}
  --tmp MODE          /tmp in the VM: 'tmpfs' (default: fresh and guest-local,
                      so unix sockets work there) or 'host' (the host's /tmp
                      over 9p, where bind() of a unix socket fails with ENXIO)
  --share-tmp PATH    with --tmp tmpfs: make the host's /tmp/NAME (the top-level
                      entry of PATH under /tmp) visible in the VM's /tmp;
                      repeatable. The current directory's is shared by itself.
  --cache DIR         cache for kernel/initramfs (default \$VMMD_NESTED_CACHE or
                      /var/cache/vmmd-nested)
  --prepare           only prepare the cache (kernel, busybox, initramfs), then exit
  --verbose           print progress and the guest console log on stderr
  --keep              keep the run directory (console log, qemu log) and say where
  --stall SECONDS     stop the VM when its init has printed nothing on the console
                      for that long (it prints a sign of life every 60 s, so a VM
                      silent for 180 s is frozen) and exit 124, as for --timeout; default
                      \$VMMD_NESTED_STALL_S or 0 (off)
  -h, --help          this text

Exit codes: the command's own; 124 timeout; 125 the VM could not run the command
(nested KVM unavailable, boot failure, bad usage, ...), with a message on stderr.
EOF
}

die() { echo "$prog: $*" >&2; exit 125; }
say() { if [[ $verbose == 1 ]]; then echo "$prog: $*" >&2; fi; }

# ---------------------------------------------------------------- options
timeout_s=""
stall_s=${VMMD_NESTED_STALL_S:-0}
mem=${VMMD_NESTED_MEM:-4G}
smp=${VMMD_NESTED_SMP:-2}
tmp_mode=tmpfs
cache=${VMMD_NESTED_CACHE:-/var/cache/vmmd-nested}
prepare_only=0
verbose=0
keep=0
env_names=(LANG LC_ALL TERM TZ CI)
tmp_shares=()
env_set=()   # entries NAME=VALUE given explicitly

while [[ $# -gt 0 ]]; do
	case $1 in
	--timeout) [[ $# -ge 2 ]] || die "--timeout needs a value"; timeout_s=$2; shift 2 ;;
	--timeout=*) timeout_s=${1#*=}; shift ;;
	--env) [[ $# -ge 2 ]] || die "--env needs a value"; a=$2; shift 2
		if [[ $a == *=* ]]; then env_set+=("$a"); else env_names+=("$a"); fi ;;
	--env=*) a=${1#*=}; shift
		if [[ $a == *=* ]]; then env_set+=("$a"); else env_names+=("$a"); fi ;;
	--mem) [[ $# -ge 2 ]] || die "--mem needs a value"; mem=$2; shift 2 ;;
	--smp) [[ $# -ge 2 ]] || die "--smp needs a value"; smp=$2; shift 2 ;;
	--tmp) [[ $# -ge 2 ]] || die "--tmp needs a value"; tmp_mode=$2; shift 2 ;;
	--share-tmp) [[ $# -ge 2 ]] || die "--share-tmp needs a value"; tmp_shares+=("$2"); shift 2 ;;
	--cache) [[ $# -ge 2 ]] || die "--cache needs a value"; cache=$2; shift 2 ;;
	--prepare) prepare_only=1; shift ;;
	--verbose|-v) verbose=1; shift ;;
	--keep) keep=1; shift ;;
	--stall) [[ $# -ge 2 ]] || die "--stall needs a value"; stall_s=$2; shift 2 ;;
	--stall=*) stall_s=${1#*=}; shift ;;
	-h|--help) usage; exit 0 ;;
	--) shift; break ;;
	*) usage >&2; die "unknown option '$1' (the command goes after --)" ;;
	esac
done
if [[ $prepare_only == 0 && $# -eq 0 ]]; then usage >&2; die "no command given"; fi
if [[ -n $timeout_s && ! $timeout_s =~ ^[0-9]+$ ]]; then die "--timeout wants whole seconds, got '$timeout_s'"; fi
[[ $stall_s =~ ^[0-9]+$ ]] || die "--stall wants whole seconds, got '$stall_s'"
case $tmp_mode in tmpfs|host) ;; *) die "--tmp must be tmpfs or host" ;; esac
[[ $smp =~ ^[1-9][0-9]*$ ]] || die "--smp wants a positive number"
for a in "${env_set[@]+"${env_set[@]}"}" "${env_names[@]}"; do
	n=${a%%=*}
	[[ $n =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "bad environment variable name '$n'"
done
[[ $EUID -eq 0 ]] || die "must run as root (9p passthrough of / and apt-get need it)"

# ---------------------------------------------------------------- preparation
# Modules the initramfs loads, in this order after dependency resolution.
# Their dependencies are read from each .ko's modinfo and added automatically.
modules_wanted=(kvm-amd virtio_pci virtio_console 9pnet_virtio 9p)

apt_lists_ready=0
apt_prepare() {
	[[ $apt_lists_ready == 1 ]] && return 0
	if ! apt-cache show "$1" >/dev/null 2>&1; then
		say "apt-get update"
		apt-get update -qq >&2 || die "apt-get update failed"
	fi
	apt_lists_ready=1
}

# apt_fetch PACKAGE DESTDIR: download a .deb with apt-get and unpack it into DESTDIR
apt_fetch() {
	local pkg=$1 dest=$2 dl
	apt_prepare "$pkg"
	dl=$(mktemp -d "$cache/dl.XXXXXX")
	say "apt-get download $pkg"
	if ! (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2); then
		# stale package lists name a file the archive no longer has: refresh once
		say "apt-get update, then retrying the download"
		apt-get update -qq >&2 || true
		if ! (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2); then
			rm -rf "$dl"; die "apt-get download $pkg failed"
		fi
	fi
	rm -rf "$dest.new"; mkdir -p "$dest.new"
	dpkg-deb -x "$dl"/*.deb "$dest.new" || { rm -rf "$dl" "$dest.new"; die "dpkg-deb -x failed for $pkg"; }
	rm -rf "$dl" "$dest"; mv "$dest.new" "$dest"
}

ensure_qemu() {
	command -v qemu-system-x86_64 >/dev/null 2>&1 && return 0
	apt_prepare qemu-system-x86
	say "apt-get install qemu-system-x86"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-x86 >&2 \
		|| die "apt-get install qemu-system-x86 failed"
}

# The kernel: Debian's current linux-image-*-amd64 (VMMD_NESTED_KERNEL_PKG overrides).
ensure_kernel() {
	local pkg kdir
	if [[ -n ${VMMD_NESTED_KERNEL_PKG:-} ]]; then
		pkg=$VMMD_NESTED_KERNEL_PKG
	elif [[ -f $cache/kernel.pkg && -d $cache/kernel/$(cat "$cache/kernel.pkg") ]]; then
		pkg=$(cat "$cache/kernel.pkg")
	else
		apt_prepare linux-image-amd64
		pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
		[[ -n $pkg ]] || die "cannot find the kernel package that linux-image-amd64 depends on"
		# The unsigned package has the same kernel and modules without the signing wrapper.
		if apt-cache show "$pkg-unsigned" >/dev/null 2>&1; then pkg=$pkg-unsigned; fi
	fi
	kdir=$cache/kernel/$pkg
	if [[ ! -d $kdir ]]; then
		mkdir -p "$cache/kernel"
		apt_fetch "$pkg" "$kdir"
	fi
	echo "$pkg" > "$cache/kernel.pkg"
	kernel_dir=$kdir
	vmlinuz=$(find "$kdir/boot" -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null | sort | head -n1)
	[[ -n $vmlinuz && -f $vmlinuz ]] || die "no vmlinuz in $kdir/boot"
	kver=${vmlinuz##*/vmlinuz-}
	[[ -d $kdir/lib/modules/$kver ]] || die "no modules for $kver in $kdir"
	# Booting the uncompressed ELF through its PVH entry skips the real-mode setup
	# and the in-guest decompression, which take ~1.5 s under TCG. Debian's bzImage
	# carries an xz payload; anything else falls back to booting the bzImage.
	boot_image=$vmlinuz
	[[ ${VMMD_NESTED_PVH:-1} == 1 ]] || return 0
	grep -qx 'CONFIG_PVH=y' "$kdir/boot/config-$kver" 2>/dev/null || return 0
	local elf=$kdir/vmlinux-pvh
	if [[ ! -s $elf ]] && command -v xz >/dev/null 2>&1; then
		local off
		off=$(LC_ALL=C grep -obUa $'\xfd7zXZ' "$vmlinuz" | head -n1 | cut -d: -f1 || true)
		if [[ -n $off ]]; then
			tail -c +$((off + 1)) "$vmlinuz" | xz -dc --single-stream > "$elf.tmp" 2>/dev/null || true
			if [[ $(head -c 4 "$elf.tmp" | od -An -c | tr -d ' ') == '177ELF' ]]; then
				mv "$elf.tmp" "$elf"
			fi
			rm -f "$elf.tmp"
		fi
	fi
	if [[ -s $elf ]]; then boot_image=$elf; fi
}

ensure_busybox() {
	busybox=$cache/busybox/bin/busybox
	if [[ ! -x $busybox ]]; then
		apt_fetch busybox-static "$cache/busybox"
	fi
	[[ -x $busybox ]] || die "busybox-static did not provide bin/busybox"
}

# Dependency-ordered list of module files for modules_wanted.
resolve_modules() {
	local moddir=$kernel_dir/lib/modules/$kver
	declare -gA modpath=()
	local f n
	while IFS= read -r f; do
		n=${f##*/}; n=${n%.ko}; n=${n%.ko.xz}
		modpath[$n]=$f
		modpath[${n//-/_}]=$f
	done < <(find "$moddir/kernel" -name '*.ko' -o -name '*.ko.xz')
	declare -gA modseen=()
	module_order=()
	local m
	# shellcheck disable=SC2086 # a space-separated list
	for m in "${modules_wanted[@]}" ${VMMD_NESTED_EXTRA_MODULES:-}; do add_module "$m"; done
}
add_module() {
	local m=${1//-/_} f deps d
	[[ -n ${modseen[$m]:-} ]] && return 0
	modseen[$m]=1
	f=${modpath[$m]:-}
	if [[ -z $f ]]; then
		# built into the kernel?
		if grep -qE "/${m}\.ko|/${1}\.ko" "$kernel_dir/lib/modules/$kver/modules.builtin" 2>/dev/null; then return 0; fi
		die "module $1 not found for kernel $kver"
	fi
	if [[ $f == *.xz ]]; then
		deps=$(xz -dc "$f" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n1)
	else
		deps=$(tr '\0' '\n' < "$f" | sed -n 's/^depends=//p' | head -n1)
	fi
	local IFS=,
	for d in $deps; do [[ -n $d ]] && add_module "$d"; done
	module_order+=("$f")
}

write_init() {
	cat <<'INIT'
#!/bin/busybox sh
# PID 1 of the run-in-vm.sh guest. Written by run-in-vm.sh; see tests/nested/README.md.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
log() { echo "vmmd-init: $*" >&2; echo "vmmd-init: $*" >> /ctl.log 2>/dev/null; }
finish() {
	sync
	if [ "$ctl_mounted" = 1 ]; then
		cp /ctl.log /ctl/guest.log 2>/dev/null
		dmesg > /ctl/dmesg.log 2>/dev/null
		[ -n "$1" ] && echo "$1" > /ctl/status.tmp && mv /ctl/status.tmp /ctl/status
		sync
		umount /ctl 2>/dev/null
	fi
	poweroff -f
	sleep 10
}
for m in $(cat /modules.order); do
	insmod "/modules/$m" || log "insmod $m failed"
done
mkdir -p /ctl /host
ctl_mounted=0
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none vmmdctl /ctl; then
	log "cannot mount the control share"; finish ""
fi
ctl_mounted=1
. /ctl/config
log "booted in $(cut -d' ' -f1 /proc/uptime) s (guest uptime)"

# nested KVM?
if [ ! -c /dev/kvm ]; then
	why=""
	grep -qw svm /proc/cpuinfo || why="no svm flag in the guest CPU;"
	grep -qw npt /proc/cpuinfo || why="$why no npt flag;"
	why="$why $(dmesg | grep -iE 'kvm|svm' | tail -n 5 | tr '\n' ' ')"
	log "nested KVM unavailable: /dev/kvm missing. $why"
	finish "nokvm $why"
fi

if ! mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,cache=$CACHE_MODE" hostroot /host; then
	log "cannot mount the host root"; finish "nohost"
fi
H=/host
mount -t proc proc $H/proc
mount -t sysfs sysfs $H/sys
mount -t cgroup2 cgroup2 $H/sys/fs/cgroup 2>/dev/null
mount -t devtmpfs devtmpfs $H/dev
mkdir -p $H/dev/pts $H/dev/shm
ln -s /proc/self/fd $H/dev/fd
ln -s /proc/self/fd/0 $H/dev/stdin
ln -s /proc/self/fd/1 $H/dev/stdout
ln -s /proc/self/fd/2 $H/dev/stderr
ln -s /proc/kcore $H/dev/core
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts $H/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $H/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $H/run
if [ "$TMP_MODE" = tmpfs ]; then
	mkdir -p /hosttmp
	mount -o bind $H/tmp /hosttmp
	mount -t tmpfs -o mode=1777 tmpfs $H/tmp
	while IFS= read -r n; do
		[ -n "$n" ] || continue
		if [ -d "/hosttmp/$n" ]; then mkdir -p "$H/tmp/$n"; else : > "$H/tmp/$n"; fi
		mount -o bind "/hosttmp/$n" "$H/tmp/$n" || log "cannot share /tmp/$n"
	done < /ctl/tmpbinds
fi
# /dev/kvm: root-only by default; open it to everyone (throw-away VM)
chroot $H chgrp kvm /dev/kvm 2>/dev/null
chmod 0666 $H/dev/kvm
ip link set lo up 2>/dev/null
hostname vmmd-nested

# stdout/stderr: the virtio-serial ports allow one open() at a time, so the
# command writes into FIFOs and a cat per stream copies into the port.
port() {
	for d in /sys/class/virtio-ports/*; do
		[ "$(cat $d/name 2>/dev/null)" = "$1" ] && { echo "/dev/${d##*/}"; return 0; }
	done
	return 1
}
R=$H/run/vmmd-nested
mkdir -p $R
cp /ctl/cmd.sh $R/cmd.sh
mkfifo $R/out $R/err
pout=$(port vmmd.stdout) || { log "no stdout port"; finish "noport"; }
perr=$(port vmmd.stderr) || { log "no stderr port"; finish "noport"; }
cat $R/out > "$pout" &
cat_out=$!
cat $R/err > "$perr" &
cat_err=$!
log "running the command at $(cut -d' ' -f1 /proc/uptime) s"
# Once a minute, say on the console that this kernel still runs and what the command's
# processes are doing (state, kernel wait channel): a hung run then shows where.
(
	while sleep 60; do
		echo "vmmd-init: alive at $(cut -d' ' -f1 /proc/uptime) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
		for p in /proc/[0-9]*; do
			[ -r $p/cmdline ] || continue
			c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null | cut -c1-60)
			case $c in ""|*vmmd-init*|"sleep "*|"cat "*) continue ;; esac
			set -- $(cat $p/stat 2>/dev/null | sed 's/^.*) //')
			echo "vmmd-init:   ${p#/proc/} $1 $(cat $p/wchan 2>/dev/null) $c"
		done
	done
) > /dev/console 2>&1 &
echo "started $(date +%s)" > /ctl/status
chroot $H /bin/bash /run/vmmd-nested/cmd.sh < /dev/null > $R/out 2> $R/err
rc=$?
log "command exited with $rc at $(cut -d' ' -f1 /proc/uptime) s"
# end whatever the command left behind, so the FIFOs reach EOF
for p in /proc/[0-9]*; do
	pid=${p#/proc/}
	case $pid in 1|$$|$cat_out|$cat_err|$watcher) continue ;; esac
	kill -9 "$pid" 2>/dev/null
done
wait $cat_out $cat_err 2>/dev/null
echo "$rc" > /ctl/rc.tmp && mv /ctl/rc.tmp /ctl/rc
sync
for m in $(awk -v h="$H" '$2 == h || index($2, h "/") == 1 { print $2 }' /proc/mounts | sort -r); do
	umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
done
finish "exited $rc"
INIT
}

ensure_initramfs() {
	local tool
	for tool in cpio gzip; do command -v $tool >/dev/null || die "$tool is needed (apt-get install $tool)"; done
	local key
	# shellcheck disable=SC2086 # VMMD_NESTED_EXTRA_MODULES is a space-separated list
	key=$({ write_init; printf '%s\n' "$kernel_dir" "$kver" "${modules_wanted[@]}" ${VMMD_NESTED_EXTRA_MODULES:-}; sha256sum "$busybox"; } | sha256sum | cut -c1-16)
	initrd=$cache/initramfs-$kver-$key.cpio.gz
	[[ -f $initrd ]] && return 0
	say "building $initrd"
	resolve_modules
	local root
	root=$(mktemp -d "$cache/initramfs.XXXXXX")
	mkdir -p "$root"/{bin,dev,proc,sys,modules,ctl,host}
	cp "$busybox" "$root/bin/busybox"
	write_init > "$root/init"
	chmod 0755 "$root/init"
	: > "$root/modules.order"
	local f
	for f in "${module_order[@]}"; do
		if [[ $f == *.xz ]]; then
			xz -dc "$f" > "$root/modules/$(basename "${f%.xz}")"
			basename "${f%.xz}" >> "$root/modules.order"
		else
			cp "$f" "$root/modules/"
			basename "$f" >> "$root/modules.order"
		fi
	done
	(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) > "$initrd.tmp"
	mv "$initrd.tmp" "$initrd"
	rm -rf "$root"
	# drop initramfs images of older versions of this script
	find "$cache" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -name "${initrd##*/}" -delete
}

mkdir -p "$cache"
exec 9> "$cache/.lock"
flock 9
ensure_qemu
ensure_busybox
ensure_kernel
ensure_initramfs
flock -u 9
exec 9>&-
say "kernel $boot_image, initramfs $initrd"
if [[ $prepare_only == 1 ]]; then
	echo "$prog: ready: $boot_image $initrd"
	exit 0
fi

# ---------------------------------------------------------------- the run
run=$(mktemp -d "${TMPDIR:-/tmp}/vmmd-nested.XXXXXX")
qpid=""
stall_pid=""
cat_pids=()
# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
	local r=$?
	if [[ -n $stall_pid ]]; then kill "$stall_pid" 2>/dev/null || true; fi
	if [[ -n $qpid ]]; then kill "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
	for p in "${cat_pids[@]+"${cat_pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
	if [[ $keep == 1 ]]; then echo "$prog: run directory kept: $run" >&2; else rm -rf "$run"; fi
	return "$r"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $run != *,* ]] || die "the run directory '$run' contains a comma, which qemu options cannot take (set TMPDIR)"
ctl=$run/ctl
mkdir -p "$ctl"
cwd=$(pwd -P)
# top-level entries of the host's /tmp to show inside the VM's fresh /tmp
: > "$ctl/tmpbinds"
if [[ $tmp_mode == tmpfs ]]; then
	for p in "$cwd" "${tmp_shares[@]+"${tmp_shares[@]}"}"; do
		p=$(realpath -m -- "$p")
		[[ $p == /tmp/?* ]] || { [[ $p == "$cwd" ]] && continue; die "--share-tmp wants a path under /tmp, got '$p'"; }
		n=${p#/tmp/}; n=${n%%/*}
		[[ -e /tmp/$n ]] || die "/tmp/$n does not exist"
		[[ $n == *$'\n'* ]] && die "newline in a /tmp name"
		grep -qxF -- "$n" "$ctl/tmpbinds" || printf '%s\n' "$n" >> "$ctl/tmpbinds"
	done
fi
cache_mode=${VMMD_NESTED_9P_CACHE:-mmap}
cat > "$ctl/config" <<EOF
TMP_MODE=$tmp_mode
CACHE_MODE=$cache_mode
EOF

# the command script that runs inside the chroot (bash from the shared host root)
{
	echo '# generated by run-in-vm.sh'
	echo 'unset OLDPWD'
	echo 'export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
	for n in "${env_names[@]}"; do
		if [[ -n ${!n+x} ]]; then printf 'export %s=%q\n' "$n" "${!n}"; fi
	done
	for a in "${env_set[@]+"${env_set[@]}"}"; do
		printf 'export %s=%q\n' "${a%%=*}" "${a#*=}"
	done
	printf 'cd -- %q || exit 125\n' "$cwd"
	printf 'exec'
	printf ' %q' "$@"
	printf '\n'
} > "$ctl/cmd.sh"

mkfifo "$run/stdout" "$run/stderr"
cat "$run/stdout" &
cat_pids+=($!)
cat "$run/stderr" >&2 &
cat_pids+=($!)

# kvm_amd.vgif=0: with the virtual GIF that QEMU TCG's emulated SVM offers, L2 guests
# under dirty logging triple-faulted now and then and the whole VM sometimes froze (8 of
# about 20 runs); without it, fewer, not none (tests/nested/README.md).
# shellcheck disable=SC2054 # the commas are qemu's
qemu=(qemu-system-x86_64
	-accel tcg,thread=multi -cpu "${VMMD_NESTED_CPU:-max}" -smp "$smp" -m "$mem"
	-machine pc -nodefaults -no-user-config -display none -no-reboot
	-kernel "$boot_image" -initrd "$initrd"
	-append "console=ttyS0 loglevel=4 panic=-1 mitigations=off tsc=reliable lpj=8000000 rdinit=/init kvm_amd.vgif=0 ${VMMD_NESTED_APPEND:-}"
	-chardev "file,id=con,path=$run/console.log" -serial chardev:con
	-fsdev "local,id=fsroot,path=/,security_model=passthrough,multidevs=remap"
	-device "virtio-9p-pci,fsdev=fsroot,mount_tag=hostroot"
	-fsdev "local,id=fsctl,path=$ctl,security_model=passthrough"
	-device "virtio-9p-pci,fsdev=fsctl,mount_tag=vmmdctl"
	-device virtio-serial-pci,id=vser
	-chardev "file,id=sout,path=$run/stdout" -device "virtserialport,bus=vser.0,chardev=sout,name=vmmd.stdout"
	-chardev "file,id=serr,path=$run/stderr" -device "virtserialport,bus=vser.0,chardev=serr,name=vmmd.stderr"
)
say "starting: ${qemu[*]}"
t0=$(date +%s.%N)
if [[ -n $timeout_s ]]; then
	timeout -k 5 "$timeout_s" "${qemu[@]}" < /dev/null > "$run/qemu.log" 2>&1 &
else
	"${qemu[@]}" < /dev/null > "$run/qemu.log" 2>&1 &
fi
qpid=$!
if [[ $stall_s -gt 0 ]]; then
	# A frozen VM (tests/nested/README.md, Pitfalls) prints nothing more: stop it early
	# rather than at --timeout.
	(
		last_lines=-1
		last_change=$(date +%s)
		while kill -0 "$qpid" 2>/dev/null; do
			sleep 5
			# the init's own lines: L1's soft-lockup reports go on growing the console
			# of a frozen VM
			lines=$(grep -c 'vmmd-init: ' "$run/console.log" 2>/dev/null || true)
			now=$(date +%s)
			if [[ $lines != "$last_lines" ]]; then
				last_lines=$lines
				last_change=$now
			elif (( now - last_change >= stall_s )); then
				echo "$((now - last_change))" > "$run/stalled"
				# qemu, the child of 'timeout' when there is one
				pkill -KILL -P "$qpid" 2>/dev/null || kill -KILL "$qpid" 2>/dev/null || true
				break
			fi
		done
	) &
	stall_pid=$!
fi
set +e
wait "$qpid"
qrc=$?
set -e
qpid=""
if [[ -n $stall_pid ]]; then kill "$stall_pid" 2>/dev/null || true; wait "$stall_pid" 2>/dev/null || true; stall_pid=""; fi
# qemu has closed the FIFOs; let the copies drain. If qemu never opened them
# (it failed early), an O_RDWR open, which never blocks, releases the readers.
for f in "$run/stdout" "$run/stderr"; do exec {fd}<>"$f"; exec {fd}>&-; done
for p in "${cat_pids[@]}"; do wait "$p" 2>/dev/null || true; done
cat_pids=()
t1=$(date +%s.%N)
say "VM ran for $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s; qemu exit $qrc"

show_logs() {
	echo "--- qemu log ---" >&2; tail -n 20 "$run/qemu.log" >&2 || true
	echo "--- guest console (tail) ---" >&2; tail -n 40 "$run/console.log" >&2 || true
}
if [[ $verbose == 1 ]]; then
	echo "--- guest console ---" >&2; cat "$run/console.log" >&2 || true
	[[ -f $ctl/guest.log ]] && { echo "--- init log ---" >&2; cat "$ctl/guest.log" >&2; }
fi
if [[ -f $ctl/rc ]]; then
	exit "$(cat "$ctl/rc")"
fi
if [[ -f $run/stalled ]]; then
	echo "$prog: the VM's init printed nothing for $(cat "$run/stalled") s: the VM froze; stopped it" >&2
	echo "--- guest console (tail) ---" >&2; tail -n 40 "$run/console.log" >&2 || true
	exit 124
fi
if [[ -n $timeout_s && $qrc == 124 ]] || [[ -n $timeout_s && $qrc == 137 ]]; then
	echo "$prog: timed out after $timeout_s s" >&2
	echo "--- guest console (tail) ---" >&2; tail -n 40 "$run/console.log" >&2 || true
	exit 124
fi
status=$(cat "$ctl/status" 2>/dev/null || true)
case $status in
nokvm*) echo "$prog: nested KVM is unavailable in the VM: ${status#nokvm }" >&2 ;;
started*) echo "$prog: the VM stopped before the command finished (qemu exit $qrc)" >&2; show_logs ;;
*) echo "$prog: the VM did not run the command (qemu exit $qrc, status '${status}')" >&2; show_logs ;;
esac
exit 125
