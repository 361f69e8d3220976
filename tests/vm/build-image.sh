#!/usr/bin/env bash
# Builds the Debian bookworm guest the VM tests boot: a raw ext4 root image, its kernel and a
# small initramfs, cached outside the repository under
#   ${VM_IMAGE_CACHE:-/var/tmp/sparkbrain-vm}/<sha256 of this file>/
# and reused while this recipe is unchanged. Prints that folder as the last line of output.
#
# Needs root (debootstrap, chroot), debootstrap, e2fsprogs and the Debian archive
# (MIRROR, default http://deb.debian.org/debian). The guest itself never needs a network: what
# the tests install in it (the .deb) comes over a 9p share, so its dependencies are baked in here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Not SPARKBRAIN_*: that prefix configures the daemon, and `sparkbrain config check` in the
# package build would refuse an unknown key.
cache_root="${VM_IMAGE_CACHE:-/var/tmp/sparkbrain-vm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
suite=bookworm

# The recipe is this file: any change to it gives a new image.
key="$(sha256sum "$here/build-image.sh" | cut -d" " -f1)"
out="$cache_root/$key"
if [[ -f "$out/root.img" && -f "$out/vmlinuz" && -f "$out/initrd.img" ]]; then
    echo "image: cached"
    echo "$out"
    exit 0
fi

[[ "$(id -u)" == 0 ]] || { echo "build-image.sh: needs root (debootstrap)" >&2; exit 1; }
for tool in debootstrap mkfs.ext4 chroot; do
    command -v "$tool" >/dev/null || { echo "build-image.sh: $tool not found (just vm-deps)" >&2; exit 1; }
done

# Build next to the final folder and rename at the end, so an interrupted build never looks
# like a cached image.
mkdir -p "$cache_root" "$cache_root/debs"
work="$(mktemp -d "$cache_root/build.XXXXXX")"
cleanup() {
    # debootstrap may leave /proc or /sys mounted in the tree when it fails.
    for m in proc sys dev/pts dev; do
        mountpoint -q "$work/rootfs/$m" 2>/dev/null && umount -l "$work/rootfs/$m"
    done
    rm -rf "$work"
}
trap cleanup EXIT
root="$work/rootfs"
t0=$(date +%s)

# What the tests need in the guest: systemd as PID 1 with udev and D-Bus (the daemon reads host
# services over D-Bus), cryptsetup and device-mapper for the LUKS volume, ext4 tools, the
# runtime libraries the package depends on (libstdc++ for ONNX Runtime, libsystemd), and apt for
# `apt purge`. curl and python3 are for the guest's own checks. The TPM2 software stack lets
# systemd-cryptenroll and cryptsetup's systemd-tpm2 token use the emulated TPM (swtpm).
packages=(
    systemd-sysv udev dbus libsystemd0 libstdc++6 libgcc-s1
    cryptsetup cryptsetup-bin dmsetup e2fsprogs util-linux mount kmod
    libtss2-esys-3.0.2-0 libtss2-rc0 libtss2-mu0 libtss2-tcti-device0
    linux-image-amd64 initramfs-tools zstd
    iproute2 procps curl ca-certificates python3-minimal apt
)
include="$(IFS=,; echo "${packages[*]}")"
echo "debootstrap $suite (minbase + ${#packages[@]} packages) from $mirror"
debootstrap --variant=minbase --cache-dir="$cache_root/debs" --include="$include" \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
}
t1=$(date +%s)
echo "debootstrap: $((t1 - t0)) s"

echo sparkbrain-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 sparkbrain-vm\n' >"$root/etc/hosts"
printf 'LABEL=root / ext4 rw,relatime 0 1\n' >"$root/etc/fstab"

# QEMU user networking: the guest is 10.0.2.15, the host's forwarded port reaches it there.
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-eth0.network" <<'EOF'
[Match]
Name=eth0
[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
EOF
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
# Timers and waits that only slow a throwaway guest down under emulation.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer systemd-networkd-wait-online.service \
    getty@tty1.service serial-getty@ttyS0.service >/dev/null 2>&1 || true

# The job runner: mounts the host's 9p share "job", runs its guest.sh, records the exit status
# and powers off. A host that finds no share (or no script) just gets an idle guest.
cat >"$root/usr/local/sbin/sparkbrain-vm-job" <<'EOF'
#!/bin/sh
mkdir -p /job
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none job /job; then
    echo "sparkbrain-vm-job: no 9p share named job" >/dev/console
    exit 0
fi
if [ -x /job/guest.sh ]; then
    echo "sparkbrain-vm-job: start at uptime $(cut -d' ' -f1 /proc/uptime)" >/dev/console
    /job/guest.sh >/job/guest.log 2>&1
    rc=$?
    echo "$rc" >/job/guest.rc
    sync
    echo "sparkbrain-vm-job: done rc=$rc at uptime $(cut -d' ' -f1 /proc/uptime)" >/dev/console
fi
systemctl --no-block poweroff
EOF
chmod 755 "$root/usr/local/sbin/sparkbrain-vm-job"
# Type=exec, not oneshot: a oneshot after multi-user.target would keep the boot "starting" and
# `systemctl is-system-running --wait` inside the job would never return.
cat >"$root/etc/systemd/system/sparkbrain-vm-job.service" <<'EOF'
[Unit]
Description=Run the VM test job from the host's 9p share
After=multi-user.target
[Service]
Type=exec
ExecStart=/usr/local/sbin/sparkbrain-vm-job
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
EOF
chroot "$root" systemctl enable sparkbrain-vm-job.service >/dev/null 2>&1

# A small initramfs that only knows how to mount the virtio root disk; every other module
# (dm-crypt, 9p, virtio-net) loads from the root file system.
kver="$(ls "$root/lib/modules")"
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic >"$root/etc/initramfs-tools/modules"
# Drop module trees a virtio guest never loads (a few hundred MB the image need not carry).
m="$root/lib/modules/$kver/kernel"
rm -rf "$m"/sound "$m"/drivers/{gpu,media,net/wireless,net/ethernet,infiniband,staging,iio,bluetooth,hid,input,usb,mmc,video,watchdog,isdn,platform,hwmon,thunderbolt,mtd,misc} \
    "$m"/net/{wireless,mac80211,bluetooth,netfilter,sunrpc,ceph}
chroot "$root" depmod "$kver"
chroot "$root" update-initramfs -u -k "$kver" >/dev/null 2>&1
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd.img"
chroot "$root" apt-get clean
rm -rf "$root"/usr/share/{man,locale,info}/* "$root"/var/lib/apt/lists/*
t2=$(date +%s)
echo "configure: $((t2 - t1)) s"

# 4 GiB, sparse: `sparkbrain doctor` fails a data directory with under 1 GiB free.
mkfs.ext4 -q -F -L root -d "$root" "$work/root.img" 4G
rm -rf "$root"
mkdir -p "$out.tmp"
mv "$work/root.img" "$work/vmlinuz" "$work/initrd.img" "$out.tmp/"
rm -rf "$out"
mv "$out.tmp" "$out"
t3=$(date +%s)
echo "image: built in $((t3 - t0)) s ($(du -sh --apparent-size "$out/root.img" | cut -f1) sparse, $(du -sh "$out/root.img" | cut -f1) used)"
echo "$out"
