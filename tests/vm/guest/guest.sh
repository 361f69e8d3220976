#!/bin/bash
# The guest half of the VM test. Runs inside the VM as root (sparkbrain-vm-job.service), with
# the host's job folder on /job: the package, /job/env (passwords and the known strings) and
# /job/tap.txt, where every check is recorded as "ok - ..." or "not ok - ...". Checks that go
# through the forwarded port are the host's: host_step hands over and waits for them.
# Command output goes to /job/guest.log.
set -u
set -a
# shellcheck source=/dev/null
. /job/env
set +a

TAP=/job/tap.txt
DATA_DISK=/dev/disk/by-id/virtio-datadisk
FS_DISK=/dev/disk/by-id/virtio-fsdisk
CONFIG=/etc/sparkbrain/config.toml
MAPPER=/dev/mapper/sparkbrain-data

record() { echo "$*" >>"$TAP"; echo "== $*"; }
ok() { record "ok - $*"; }
not_ok() { record "not ok - $*"; }
# check DESCRIPTION COMMAND...: one check from a command's exit status.
check() {
    local what=$1 rc
    shift
    echo "+ $*"
    "$@"
    rc=$?
    if [ "$rc" = 0 ]; then ok "$what"; else not_ok "$what (exit $rc)"; fi
    return "$rc"
}
# expect_fail DESCRIPTION PATTERN COMMAND...: the command must fail and say PATTERN (ERE, any case).
expect_fail() {
    local what=$1 pattern=$2 out rc
    shift 2
    echo "+ $*"
    out=$("$@" 2>&1)
    rc=$?
    echo "$out"
    if [ "$rc" = 0 ]; then
        not_ok "$what (exit 0)"
    elif ! grep -qiE -- "$pattern" <<<"$out"; then
        not_ok "$what (exit $rc, but the message does not match /$pattern/: $(head -c 300 <<<"$out" | tr '\n' ' '))"
    else
        ok "$what (exit $rc: $(head -n 1 <<<"$out" | head -c 200))"
    fi
}
# with_input TEXT COMMAND...: runs the command with TEXT and a newline on standard input.
with_input() {
    local text=$1
    shift
    printf '%s\n' "$text" | "$@"
}
now() { cut -d' ' -f1 /proc/uptime; }
scenario_start=""
begin() {
    end_scenario
    scenario=$1
    scenario_start=$(now)
    record "# scenario $1: $2"
}
end_scenario() {
    if [ -n "$scenario_start" ]; then
        record "# time scenario $scenario: $(awk -v a="$scenario_start" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') s"
    fi
    scenario_start=""
}
# host_step NAME: asks the host to run its checks NAME and waits for it to finish.
host_step() {
    local i
    : >"/job/steps/$1.req"
    for ((i = 0; i < HOST_STEP_TIMEOUT; i++)); do
        [ -e "/job/steps/$1.done" ] && return 0
        sleep 1
    done
    not_ok "host checks $1 finished within ${HOST_STEP_TIMEOUT} s"
    return 1
}
# wait_ready SECONDS: /readyz answers 200 inside the guest.
wait_ready() {
    local i
    for ((i = 0; i < $1; i++)); do
        [ "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 10 https://127.0.0.1:8470/readyz)" = 200 ] && return 0
        sleep 1
    done
    curl -sk --max-time 10 https://127.0.0.1:8470/readyz
    return 1
}
# write_config [EXTRA]: the test configuration. Any non-loopback bind is TLS (a self-signed
# certificate made on first start), so the host talks HTTPS to the forwarded port.
write_config() {
    cat >"$CONFIG" <<EOF
# VM test configuration
data_dir = "/var/lib/sparkbrain"
[server]
bind = "0.0.0.0:8470"
[runtime]
memory_mode = "fast"
$1
EOF
}
add_admin() { with_input "$ADMIN_PASSWORD" sparkbrain user add admin --role admin --password-stdin; }
journal() { journalctl -u sparkbrain --no-pager -n "${1:-40}" -o cat; }

echo "guest: $(uname -r), PID 1 $(ps -p 1 -o comm=), $(nproc) CPUs, $(free -m | awk '/Mem:/{print $2}') MiB"
systemctl is-system-running --wait
record "# guest booted in $(now) s (uptime)"

# ---- 1. install ---------------------------------------------------------------------------------
begin 1 "install the package and start the service"
check "1. dpkg -i installs the package" dpkg -i /job/sparkbrain.deb
check "1. ONNX Runtime and the model are where the default configuration looks" \
    test -f /usr/lib/sparkbrain/libonnxruntime.so.1.31.1 \
    -a -f /usr/share/sparkbrain/models/all-MiniLM-L6-v2/model.onnx \
    -a -f /usr/share/sparkbrain/models/all-MiniLM-L6-v2/model.query-int8.onnx \
    -a -f /usr/share/sparkbrain/models/all-MiniLM-L6-v2/tokenizer.json
check "1. /etc/sparkbrain/config.toml is a conffile" \
    bash -c "dpkg-query -W -f='\${Conffiles}' sparkbrain | grep -q ' /etc/sparkbrain/config.toml '"
check "1. the installed configuration is valid" sparkbrain config check
check "1. /etc/sparkbrain/keys is root:root 0700" test "$(stat -c %U:%G:%a /etc/sparkbrain/keys)" = root:root:700
check "1. /var/lib/sparkbrain is root:root 0700" test "$(stat -c %U:%G:%a /var/lib/sparkbrain)" = root:root:700
check "1. completions and man page installed" test -f /usr/share/bash-completion/completions/sparkbrain \
    -a -f /usr/share/zsh/vendor-completions/_sparkbrain -a -f /usr/share/fish/vendor_completions.d/sparkbrain.fish \
    -a -f /usr/share/man/man1/sparkbrain.1.gz
check "1. the service is not enabled by the install" bash -c '! systemctl is-enabled --quiet sparkbrain'
check "1. the service is not started by the install" bash -c '! systemctl is-active --quiet sparkbrain'
check "1. the backup timer is not enabled by the install" bash -c '! systemctl is-enabled --quiet sparkbrain-backup.timer'
check "1. the backup timer is not started by the install" bash -c '! systemctl is-active --quiet sparkbrain-backup.timer'
# --man=no: the image has no man-db to look the Documentation= page up with.
check "1. systemd-analyze verify sparkbrain.service" systemd-analyze verify --man=no sparkbrain.service
check "1. systemd-analyze verify sparkbrain-backup.service and .timer" \
    systemd-analyze verify --man=no sparkbrain-backup.service sparkbrain-backup.timer
write_config ""
t=$(now)
check "1. systemctl enable --now sparkbrain" systemctl enable --now sparkbrain
record "# service start (enable --now) took $(awk -v a="$t" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') s"
check "1. systemctl is-active sparkbrain" systemctl is-active sparkbrain
systemd-analyze security --no-pager sparkbrain >/job/security.txt 2>&1
score=$(sed -n 's/.*Overall exposure level for sparkbrain.service: \([0-9.]*\).*/\1/p' /job/security.txt)
check "1. systemd-analyze security sparkbrain: ${score:-no score} (at most 3.0)" \
    awk -v s="$score" 'BEGIN { exit !(s != "" && s + 0 <= 3.0) }'
systemd-analyze security --no-pager sparkbrain-backup >/job/security-backup.txt 2>&1
score=$(sed -n 's/.*Overall exposure level for sparkbrain-backup.service: \([0-9.]*\).*/\1/p' /job/security-backup.txt)
check "1. systemd-analyze security sparkbrain-backup: ${score:-no score} (at most 3.0)" \
    awk -v s="$score" 'BEGIN { exit !(s != "" && s + 0 <= 3.0) }'
sparkbrain doctor >/job/doctor.txt 2>&1
rc=$?
cat /job/doctor.txt
check "1. sparkbrain doctor passes (doctor.txt)" test "$rc" = 0
# Host services through the real systemd over the system bus (D-Bus): a stand-in unit under
# the fabric manager's sibling's name, active and then failed.
printf '[Service]\nExecStart=/bin/sleep infinity\n' >/etc/systemd/system/nvidia-persistenced.service
systemctl daemon-reload
systemctl start nvidia-persistenced
sparkbrain doctor >/job/doctor-host-services.txt 2>&1
check "1. doctor reads an active host service from the real systemd" \
    grep -qE '^\[ ok \] host services +nvidia-persistenced.service active' /job/doctor-host-services.txt
systemctl kill --signal=KILL nvidia-persistenced
sleep 1
sparkbrain doctor >>/job/doctor-host-services.txt 2>&1
check "1. and fails when that service has failed" \
    grep -qE '^\[FAIL\] host services .*nvidia-persistenced' /job/doctor-host-services.txt
systemctl reset-failed nvidia-persistenced
rm /etc/systemd/system/nvidia-persistenced.service
systemctl daemon-reload
check "1. doctor finds ONNX Runtime in /usr/lib/sparkbrain" grep -qE '^\[ ok \] onnx runtime .*/usr/lib/sparkbrain/' /job/doctor.txt
check "1. doctor finds and loads the embedding model" \
    bash -c "grep -qE '^\[ ok \] embedding model' /job/doctor.txt && grep -qE '^\[ ok \] model loads' /job/doctor.txt"
check "1. the service becomes ready" wait_ready 600 || journal

# ---- 2. the API from the host ---------------------------------------------------------------
begin 2 "sign in, index a document and find it over the forwarded port"
check "2. sparkbrain user add admin --role admin --password-stdin" add_admin
host_step index-1

# ---- 3. encrypted volume --------------------------------------------------------------------------
scenario_3() {
check "3. systemctl stop sparkbrain" systemctl stop sparkbrain
# Cheap key derivation: argon2id's defaults take most of a minute under emulation.
write_config "[volume]
pbkdf_memory_kib = 65536
pbkdf_iterations = 4"
check "3. sparkbrain volume create on the data disk" \
    with_input "$PASSPHRASE" sparkbrain volume create "$DATA_DISK" --name data --yes
echo 'data = "data"' >>"$CONFIG"
cat "$CONFIG"
check "3. systemctl start sparkbrain with the volume configured" systemctl start sparkbrain || journal
check "3. the service becomes ready" wait_ready 600 || journal
check "3. findmnt: /var/lib/sparkbrain is on $MAPPER" \
    test "$(findmnt -n -o SOURCE /var/lib/sparkbrain)" = "$MAPPER"
findmnt /var/lib/sparkbrain
check "3. admin created again in the new, empty store" add_admin
host_step index-2
expect_fail "3. volume lock is refused while the daemon uses the volume" 'stop it first' \
    sparkbrain volume lock data
check "3. systemctl stop sparkbrain" systemctl stop sparkbrain
check "3. sparkbrain volume lock data" sparkbrain volume lock data
check "3. the service starts with the volume locked" systemctl start sparkbrain
check "3. and is active" systemctl is-active sparkbrain
host_step locked
# The daemon mounted the volume itself, inside its own mount namespace (systemd/README.md).
pid=$(systemctl show -P MainPID sparkbrain)
# Two lines there: the sandbox's bind mount of the directory, then the volume on top of it.
inside=$(nsenter -t "$pid" -m findmnt -n -o SOURCE /var/lib/sparkbrain | tail -n 1)
check "3. the API unlock mounted the volume in the daemon's mount namespace (${inside:-nothing})" \
    test "$inside" = "$MAPPER"
record "# on the host /var/lib/sparkbrain is then on: $(findmnt -n -o SOURCE /var/lib/sparkbrain || echo 'the root file system'); host CLI: $(sparkbrain user list 2>&1 | head -n 1)"
# The plaintext must reach the disk only encrypted: flush, then look at both sides.
sync
echo 3 >/proc/sys/vm/drop_caches
raw=$(grep -a -c -- "$KNOWN_2" "$DATA_DISK")
check "3. the known string is not on the raw data disk (grep -c: $raw)" test "$raw" = 0
plain=$(grep -a -c -- "$KNOWN_2" "$MAPPER")
check "3. the known string is on the opened volume $MAPPER (grep -c: $plain)" test "${plain:-0}" -gt 0
}

# ---- 4. clear errors ------------------------------------------------------------------------------
scenario_4() {
# (the wrong passphrase over the API was checked by the host while the volume was locked)
expect_fail "4. volume create on the data disk in use fails and says so" 'in use|mounted|busy|open' \
    with_input other-pass-1 sparkbrain volume create "$DATA_DISK" --name again --yes
check "4. systemctl stop sparkbrain" systemctl stop sparkbrain
# --mount: a second volume must not land on the data directory.
expect_fail "4. volume create on a disk holding ext4 without --force fails and names it" 'ext4' \
    with_input scratch-pass-1 sparkbrain volume create "$FS_DISK" --name scratch --mount /mnt/scratch --yes
check "4. volume create --force --yes on that disk" \
    with_input scratch-pass-1 sparkbrain volume create "$FS_DISK" --name scratch --mount /mnt/scratch --force --yes
# Put the scratch volume away again so that only the data volume is left.
sparkbrain volume lock scratch || {
    umount /mnt/scratch
    cryptsetup close sparkbrain-scratch
}
check "4. sparkbrain volume lock data" sparkbrain volume lock data
expect_fail "4. volume unlock with a wrong passphrase fails" 'passphrase' \
    with_input wrong-passphrase sparkbrain volume unlock data
}

# ---- 4b. keys -------------------------------------------------------------------------------------
# The guest's python3-minimal has no json module: pick the data volume's slots out of the JSON
# (volumes are listed by name, so "data" comes before "scratch").
slots() { sparkbrain volume status --json | tr -d ' \n' | grep -o '"key_slots":\[[0-9,]*\]' | head -n 1 | tr -dc '0-9,'; }
scenario_keys() {
check "4b. volume key add: a second passphrase" \
    bash -c "printf '%s\n%s\n' \"\$PASSPHRASE\" second-pass-1 | sparkbrain volume key add data"
check "4b. the volume has two key slots ($(slots))" test "$(slots)" = "0,1"
check "4b. volume unlock --passphrase with the second passphrase" \
    with_input second-pass-1 sparkbrain volume unlock data --passphrase
check "4b. volume lock data" sparkbrain volume lock data
check "4b. volume key passwd: the second passphrase changed" \
    bash -c "printf '%s\n%s\n' second-pass-1 third-pass-1 | sparkbrain volume key passwd data"
expect_fail "4b. the old second passphrase no longer opens it" 'wrong passphrase' \
    with_input second-pass-1 sparkbrain volume unlock data --passphrase
check "4b. volume key remove --slot 1" \
    with_input "$PASSPHRASE" sparkbrain volume key remove data --slot 1
check "4b. one key slot is left ($(slots))" test "$(slots)" = "0"
expect_fail "4b. the last key slot is never wiped" 'last key' \
    with_input "$PASSPHRASE" sparkbrain volume key remove data --slot 0
check "4b. volume header-backup" sparkbrain volume header-backup data --to /root/data-header.img
check "4b. the header backup is a LUKS header" cryptsetup isLuks /root/data-header.img
check "4b. volume key add --key-file" \
    with_input "$PASSPHRASE" sparkbrain volume key add data --key-file
check "4b. the key file is root-only 0400" \
    test "$(stat -c %U:%a /etc/sparkbrain/keys/data.key)" = root:400
check "4b. the service starts and unlocks the volume with its key file, unattended" \
    systemctl start sparkbrain
check "4b. and becomes ready" wait_ready 600 || journal
check "4b. systemctl stop sparkbrain" systemctl stop sparkbrain
check "4b. volume lock data" sparkbrain volume lock data
# TPM2: the emulated TPM is detected and offered, a key bound to it opens the volume without a
# passphrase (the key file is moved aside so that only the TPM can).
check "4b. the VM's TPM2 is there (/dev/tpmrm0)" test -e /dev/tpmrm0
sparkbrain doctor >/job/doctor-tpm.txt 2>&1
check "4b. doctor offers TPM2 binding" grep -q -- '--tpm2' /job/doctor-tpm.txt
check "4b. volume key add --tpm2 (systemd-cryptenroll)" \
    with_input "$PASSPHRASE" sparkbrain volume key add data --tpm2
check "4b. status shows the TPM2 key" bash -c 'sparkbrain volume status --json | tr -d " \n" | grep -q "\"tpm2_enrolled\":true"'
mv /etc/sparkbrain/keys/data.key /root/data.key
check "4b. volume unlock opens it with the TPM2 key, no passphrase asked" \
    sparkbrain volume unlock data </dev/null
check "4b. volume lock data" sparkbrain volume lock data
mv /root/data.key /etc/sparkbrain/keys/data.key
}

begin 3 "the data directory on an encrypted volume: create, lock, unlock over the API"
if sparkbrain volume --help >/dev/null 2>&1; then
    scenario_3
    begin 4 "clear errors"
    scenario_4
    begin 4b "keys: passphrases, slots, header backup, key file"
    scenario_keys
else
    not_ok "3. sparkbrain has a volume command (scenarios 3 and 4 need it)"
    begin 4 "clear errors"
    not_ok "4. sparkbrain has a volume command"
fi

# ---- 5. backups -----------------------------------------------------------------------------------
# The daily timer, shortened by a drop-in, makes an encrypted backup through the running daemon;
# the data volume's file system is then made anew and the backup restored into it.
BACKUP_DIR=/var/backups/sparkbrain
BACKUP_PASSPHRASE_FILE=/etc/sparkbrain/backup.passphrase
# archives: the backup archives in the target, oldest first (the names hold the UTC time).
# Only finished names: whatever a run writes before its archive is complete does not count.
archives() {
    find "$BACKUP_DIR" -maxdepth 1 -regextype posix-extended \
        -regex '.*/sparkbrain-[0-9]{8}T[0-9]{6}Z\.tar\.zst(\.age)?' -printf '%f\n' 2>/dev/null | sort
}
# backup_unit PROPERTY: a property of sparkbrain-backup.service.
backup_unit() { systemctl show -P "$1" sparkbrain-backup.service; }
backup_journal() { journalctl -u sparkbrain-backup.service --no-pager -o cat; }
# wait_for_archive SECONDS N: more than N archives are in the target and the run that made the
# last one has ended.
wait_for_archive() {
    local i
    for ((i = 0; i < $1; i++)); do
        if [ "$(archives | wc -l)" -gt "$2" ] && [ "$(backup_unit ActiveState)" != activating ]; then
            return 0
        fi
        sleep 1
    done
    return 1
}
scenario_backup() {
check "5. the backup service does nothing, successfully, while no target is configured" \
    systemctl start sparkbrain-backup.service
backup_journal | tail -n 5
install -d -m 0700 "$BACKUP_DIR"
(umask 077 && printf '%s\n' "$BACKUP_PASSPHRASE" >"$BACKUP_PASSPHRASE_FILE")
cat >>"$CONFIG" <<CONF
[backup]
target = "$BACKUP_DIR"
passphrase_file = "$BACKUP_PASSPHRASE_FILE"
CONF
check "5. the configuration with [backup] is valid" sparkbrain config check
# The daemon writes the local target itself: its unit lets it write /var/backups/sparkbrain
# (systemd/README.md), no drop-in needed.
# The timer, due 5 s after it starts instead of daily.
mkdir -p /etc/systemd/system/sparkbrain-backup.timer.d
printf '[Timer]\nOnActiveSec=5s\nRandomizedDelaySec=0\nAccuracySec=1s\n' \
    >/etc/systemd/system/sparkbrain-backup.timer.d/vm-test.conf
systemctl daemon-reload
# As an unattended appliance runs: the daemon unlocks the volume at start with its key file,
# and mounts it in its own mount namespace (systemd/README.md), which the backup unit is not in.
check "5. the service starts and unlocks the volume with its key file" systemctl start sparkbrain || journal
check "5. and becomes ready" wait_ready 600 || journal
check "5. sparkbrain-backup.service exits 0 while the daemon holds the volume it unlocked itself" \
    systemctl start sparkbrain-backup.service
backup_journal | tail -n 5
record "# the unit said: $(backup_journal | grep -E 'backup written|error' | tail -n 1 | head -c 300)"
archives | tail -n 1 >/job/backup-name
host_step unattended
check "5. systemctl stop sparkbrain" systemctl stop sparkbrain
check "5. sparkbrain volume lock data" sparkbrain volume lock data
# From here on the volume is opened and mounted on the host rather than by the daemon: it then
# stays mounted when the daemon stops, for the backup without a daemon and for the restore.
check "5. sparkbrain volume unlock data (key file) on the host" sparkbrain volume unlock data </dev/null
check "5. findmnt: /var/lib/sparkbrain is on $MAPPER" \
    test "$(findmnt -n -o SOURCE /var/lib/sparkbrain)" = "$MAPPER"
check "5. systemctl start sparkbrain" systemctl start sparkbrain || journal
check "5. the service becomes ready" wait_ready 600 || journal
local t rc name n triggered
n=$(archives | wc -l)
check "5. systemctl enable --now sparkbrain-backup.timer" systemctl enable --now sparkbrain-backup.timer
systemctl list-timers --all --no-pager sparkbrain-backup.timer
t=$(now)
wait_for_archive 120 "$n"
rc=$?
check "5. the timer's backup lands in $BACKUP_DIR ($(awk -v a="$t" -v b="$(now)" 'BEGIN{printf "%.0f", b-a}') s after enabling it)" \
    test "$rc" = 0
ls -l "$BACKUP_DIR"
name=$(archives | tail -n 1)
echo "$name" >/job/backup-name
triggered=$(systemctl show -P LastTriggerUSec sparkbrain-backup.timer)
check "5. the timer started the backup (last trigger: ${triggered:-none})" \
    test -n "$triggered" -a "$triggered" != n/a
check "5. the archive's name is sparkbrain-<UTC time>.tar.zst.age: $name" \
    grep -qE '^sparkbrain-[0-9]{8}T[0-9]{6}Z\.tar\.zst\.age$' <<<"$name"
check "5. the archive is encrypted with age" \
    bash -c "head -c 21 '$BACKUP_DIR/$name' | grep -qx 'age-encryption.org/v1'"
record "# archive $name: $(stat -c '%s bytes, mode %a, owner %U' "$BACKUP_DIR/$name")"
backup_journal | tail -n 20
check "5. sparkbrain-backup.service succeeded (Result $(backup_unit Result), exit status $(backup_unit ExecMainStatus))" \
    test "$(backup_unit Result):$(backup_unit ExecMainStatus)" = success:0
check "5. its journal names the archive" bash -c "journalctl -u sparkbrain-backup.service -o cat | grep -qF '$name'"
check "5. sparkbrain backup list shows it" bash -c "sparkbrain backup list | grep -qF '$name'"
check "5. sparkbrain backup verify with the passphrase file" \
    sparkbrain backup verify "$BACKUP_DIR/$name" --passphrase-file "$BACKUP_PASSPHRASE_FILE"
# Metrics, the backups route and the audit log, over the forwarded port; the host also notes
# the documents and users that the restore must bring back.
host_step backup
check "5. systemctl stop sparkbrain" systemctl stop sparkbrain
# The same unit with the daemon stopped: the command makes the backup itself, and the unit does
# not start the daemon again.
n=$(archives | wc -l)
check "5. sparkbrain-backup.service with the daemon stopped (in-process)" systemctl start sparkbrain-backup.service
backup_journal | tail -n 5
check "5. it added an archive ($n before, $(archives | wc -l) after)" test "$(archives | wc -l)" -gt "$n"
check "5. and left the daemon stopped" bash -c '! systemctl is-active --quiet sparkbrain'
check "5. sparkbrain backup verify of that archive" \
    sparkbrain backup verify "$BACKUP_DIR/$(archives | tail -n 1)" --passphrase-file "$BACKUP_PASSPHRASE_FILE"
# Lose everything: a new, empty file system on the opened volume.
check "5. unmount the data volume" umount /var/lib/sparkbrain
check "5. mkfs.ext4 on $MAPPER: the data is gone" mkfs.ext4 -q -F "$MAPPER"
check "5. mount the empty file system on /var/lib/sparkbrain" mount "$MAPPER" /var/lib/sparkbrain
chmod 0700 /var/lib/sparkbrain
check "5. nothing of the store is left ($(ls -A /var/lib/sparkbrain | tr '\n' ' '))" \
    test ! -e /var/lib/sparkbrain/sparkbrain.db
t=$(now)
check "5. sparkbrain backup restore of the timer's archive --passphrase-file --yes" \
    sparkbrain backup restore "$BACKUP_DIR/$name" --passphrase-file "$BACKUP_PASSPHRASE_FILE" --yes
record "# restore took $(awk -v a="$t" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') s"
ls -la /var/lib/sparkbrain
check "5. systemctl start sparkbrain after the restore" systemctl start sparkbrain || journal 80
check "5. the service becomes ready" wait_ready 600 || journal 80
# Same documents, same users, the admin signs in, search finds the known string.
host_step restored
# Leave things as scenario 6 expects them: daemon stopped, volume locked. The timer stays
# enabled, for purge to show that it forgets it.
check "5. systemctl stop sparkbrain" systemctl stop sparkbrain
check "5. sparkbrain volume lock data" sparkbrain volume lock data
}

begin 5 "backups: the daily timer, a backup through the daemon and one without, restore onto a new file system"
if ! sparkbrain backup --help >/dev/null 2>&1; then
    not_ok "5. sparkbrain has a backup command"
elif ! cryptsetup isLuks "$DATA_DISK"; then
    not_ok "5. the data volume from scenario 3 is there (the backup scenario restores into it)"
else
    scenario_backup
fi

# ---- 6. purge -------------------------------------------------------------------------------------
begin 6 "apt purge keeps the volume"
if ! cryptsetup isLuks "$DATA_DISK"; then
    # Scenario 3 made no volume; make one by hand so that purge is still checked against a
    # LUKS volume holding the known string.
    record "# no LUKS volume on the data disk (scenario 3 failed): making one with cryptsetup for this scenario"
    printf '%s' "$PASSPHRASE" | cryptsetup luksFormat --batch-mode --type luks2 --pbkdf argon2id \
        --pbkdf-memory 65536 --pbkdf-force-iterations 4 --key-file - "$DATA_DISK"
    printf '%s' "$PASSPHRASE" | cryptsetup open --key-file - "$DATA_DISK" sparkbrain-data
    mkfs.ext4 -q "$MAPPER"
    mkdir -p /mnt/check
    mount "$MAPPER" /mnt/check && echo "$KNOWN_2" >/mnt/check/known.txt
    umount /mnt/check
    cryptsetup close sparkbrain-data
fi
mountpoint -q /var/lib/sparkbrain && umount /var/lib/sparkbrain
kept=$(ls -A /var/lib/sparkbrain 2>/dev/null | wc -l)
check "6. apt-get purge sparkbrain" env DEBIAN_FRONTEND=noninteractive apt-get purge -y sparkbrain
check "6. the package is gone" bash -c '! dpkg-query -W -f="\${Status}" sparkbrain 2>/dev/null | grep -q installed'
check "6. /usr/bin/sparkbrain is gone" test ! -e /usr/bin/sparkbrain
check "6. /etc/sparkbrain is gone" test ! -e /etc/sparkbrain
check "6. the backup timer is stopped" bash -c '! systemctl is-active --quiet sparkbrain-backup.timer'
check "6. and no longer enabled (timers.target.wants link removed)" \
    test ! -e /etc/systemd/system/timers.target.wants/sparkbrain-backup.timer -a ! -L /etc/systemd/system/timers.target.wants/sparkbrain-backup.timer
if [ "$kept" -gt 0 ]; then
    check "6. /var/lib/sparkbrain on the root file system, not empty, is kept" test -f /var/lib/sparkbrain/sparkbrain.db
else
    check "6. /var/lib/sparkbrain on the root file system, empty, is removed" test ! -e /var/lib/sparkbrain
fi
check "6. the LUKS header on the data disk is intact" cryptsetup isLuks "$DATA_DISK"
if [ -e "$MAPPER" ]; then
    umount "$MAPPER" 2>/dev/null
    cryptsetup close sparkbrain-data
fi
check "6. the volume opens with its passphrase" \
    bash -c "printf '%s' \"\$PASSPHRASE\" | cryptsetup open --key-file - '$DATA_DISK' check-data"
mkdir -p /mnt/check
check "6. and mounts" mount -o ro /dev/mapper/check-data /mnt/check
check "6. and holds the data (the known string is in its files)" grep -rqa -- "$KNOWN_2" /mnt/check
umount /mnt/check
cryptsetup close check-data
end_scenario
exit 0
