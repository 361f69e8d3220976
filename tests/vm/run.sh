#!/usr/bin/env bash
# End-to-end test of the package in a Debian bookworm VM (QEMU, software emulation): install,
# the API from the host, the encrypted data volume, clear errors, backups and restore, purge.
# One boot runs all scenarios; tests/vm/guest/guest.sh is the guest's half, the host's checks
# are below.
#
#   tests/vm/run.sh [PATH/sparkbrain_*.deb]      (just test-vm; needs root)
#
# Without a package it builds one (scripts/deb.sh). The image comes from tests/vm/build-image.sh
# (cached). Prints every check as "ok - ..." / "not ok - ...", then "N passed, N failed"; exits
# 0 only when none failed. VM_TIMEOUT_SECONDS (default 1800 s) bounds the VM: on timeout
# QEMU is killed and the run fails. The job folder with the guest's log, the serial console and
# doctor.txt is kept and its path printed.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
vm_timeout="${VM_TIMEOUT_SECONDS:-1800}"

[[ "$(id -u)" == 0 ]] || { echo "tests/vm/run.sh: needs root (debootstrap, and the image's files are root's)" >&2; exit 1; }
for tool in qemu-system-x86_64 curl jq mkfs.ext4 python3 lintian; do
    command -v "$tool" >/dev/null || { echo "tests/vm/run.sh: $tool not found (scripts/install-vm-deps.sh)" >&2; exit 1; }
done

# ---- the package and the image ----------------------------------------------------------------
deb="${1:-}"
if [[ -z "$deb" ]]; then
    t=$SECONDS
    deb="$(bash "$repo/scripts/deb.sh" | tail -n 1)" || { echo "building the package failed" >&2; exit 1; }
    echo "# package built in $((SECONDS - t)) s"
fi
[[ -f "$deb" ]] || { echo "no package at $deb" >&2; exit 1; }
echo "# package: $deb"
t=$SECONDS
out="$(bash "$here/build-image.sh")" || { echo "building the image failed" >&2; exit 1; }
sed 's/^/# /' <<<"$out"
img="$(tail -n 1 <<<"$out")"
echo "# image ready in $((SECONDS - t)) s"

# ---- the job folder, shared with the guest over 9p ---------------------------------------------
job="$(mktemp -d "${TMPDIR:-/var/tmp}/sparkbrain-vm-job.XXXXXX")"
mkdir -p "$job/steps"
cp "$deb" "$job/sparkbrain.deb"
install -m 755 "$here/guest/guest.sh" "$job/guest.sh"
: >"$job/tap.txt"
# A fresh sparse disk per run for the volume, and a small one that already holds ext4.
truncate -s 1G "$job/datadisk.img"
truncate -s 64M "$job/fsdisk.img"
mkfs.ext4 -q -F "$job/fsdisk.img"
rand() { od -An -N6 -tx1 /dev/urandom | tr -d ' \n'; }
ADMIN_PASSWORD="vm-admin-pass-$(rand)"
PASSPHRASE=vm-pass-1
BACKUP_PASSPHRASE="vm-backup-pass-$(rand)"
# Strings no disk holds by chance: one per indexed document.
KNOWN_1="vmcanaryone$(rand)"
KNOWN_2="vmcanarytwo$(rand)"
HOST_STEP_TIMEOUT=$vm_timeout
cat >"$job/env" <<EOF
ADMIN_PASSWORD=$ADMIN_PASSWORD
PASSPHRASE=$PASSPHRASE
KNOWN_1=$KNOWN_1
KNOWN_2=$KNOWN_2
BACKUP_PASSPHRASE=$BACKUP_PASSPHRASE
HOST_STEP_TIMEOUT=$HOST_STEP_TIMEOUT
EOF
# The package's own check, on the host: lintian must report no errors and no warnings.
if lintian --fail-on error,warning "$deb" >"$job/lintian.txt" 2>&1; then
    echo "ok - 0. lintian: no errors or warnings" >>"$job/tap.txt"
else
    echo "not ok - 0. lintian: $(grep -E '^[EW]: ' "$job/lintian.txt" | head -n 3 | tr '\n' ' ')" >>"$job/tap.txt"
fi
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="https://127.0.0.1:$port"
tap="$job/tap.txt"

# ---- host checks ------------------------------------------------------------------------------
record() { echo "$*" >>"$tap"; }
ok() { record "ok - $*"; }
not_ok() { record "not ok - $*"; }
# expect DESCRIPTION CONDITION...: one check from a test command.
expect() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else not_ok "$what"; fi
}
# api METHOD PATH [CURL ARGS...]: sets CODE and BODY. The daemon's certificate is self-signed.
api() {
    local method=$1 path=$2 out
    shift 2
    out="$(curl -sk --max-time 60 -X "$method" -w '\n%{http_code}' "$@" "$base$path")"
    CODE="${out##*$'\n'}"
    BODY="${out%$'\n'*}"
    [[ -n "$CODE" ]] || CODE=000
}
short() { head -c 300 <<<"$BODY" | tr '\n' ' '; }
# wait_for CODE PATH SECONDS: polls until PATH answers CODE.
wait_for() {
    local want=$1 path=$2 until=$((SECONDS + $3))
    while ((SECONDS < until && SECONDS < deadline)); do
        api GET "$path"
        [[ "$CODE" == "$want" ]] && return 0
        sleep 2
    done
    return 1
}
login() {
    api POST /api/v1/auth/token --data-urlencode username=admin --data-urlencode "password=$ADMIN_PASSWORD"
    TOKEN="$(jq -r '.access_token // empty' <<<"$BODY" 2>/dev/null)"
    [[ "$CODE" == 200 && -n "$TOKEN" ]]
}
auth() { echo "Authorization: Bearer $TOKEN"; }
# search_finds KNOWN: a text search for KNOWN returns a hit whose chunk holds it.
search_finds() {
    api POST /api/v1/search -H "$(auth)" -H 'content-type: application/json' \
        -d "$(jq -nc --arg q "$1" '{query: $q, mode: "text"}')"
    [[ "$CODE" == 200 ]] && jq -e --arg k "$1" '[.hits[].chunk.text | contains($k)] | any' <<<"$BODY" >/dev/null
}

# index N KNOWN: scenario N's document round trip through the API.
host_index() {
    local n=$1 known=$2 id status until
    api GET /healthz
    expect "$n. GET /healthz from the host: $CODE" test "$CODE" = 200
    local t=$SECONDS
    wait_for 200 /readyz 600
    expect "$n. GET /readyz becomes 200 ($((SECONDS - t)) s)" test "$CODE" = 200
    login
    expect "$n. admin signs in over the API ($CODE)" test "$CODE" = 200 -a -n "$TOKEN"
    api POST /api/v1/collections -H "$(auth)" -H 'content-type: application/json' -d '{"name": "vmtest"}'
    expect "$n. create a collection: $CODE" test "$CODE" = 201
    printf 'Appliance test note.\nThe word to find is %s, kept on this box.\n' "$known" >"$job/note-$n.txt"
    api POST /api/v1/collections/vmtest/documents -H "$(auth)" -F "file=@$job/note-$n.txt;type=text/plain"
    id="$(jq -r '.id // empty' <<<"$BODY" 2>/dev/null)"
    expect "$n. upload a small text document: $CODE" test "$CODE" = 202 -a -n "$id"
    t=$SECONDS
    until=$((SECONDS + 600))
    status=""
    while [[ -n "$id" ]] && ((SECONDS < until && SECONDS < deadline)); do
        api GET "/api/v1/documents/$id" -H "$(auth)"
        status="$(jq -r '.status // empty' <<<"$BODY" 2>/dev/null)"
        [[ "$status" == indexed || "$status" == failed ]] && break
        sleep 2
    done
    expect "$n. the document is indexed ($status after $((SECONDS - t)) s)" test "$status" = indexed
    if search_finds "$known"; then
        ok "$n. search finds the known string"
    else
        not_ok "$n. search finds the known string ($CODE: $(short))"
    fi
}

# Scenario 3 (and 4's API part) with the daemon started on a locked volume.
host_locked() {
    local unlock=/api/v1/volumes/data/unlock json='content-type: application/json'
    api GET /readyz
    expect "3. /readyz is 503 while the volume is locked ($CODE: $(short))" \
        bash -c '[[ "$1" == 503 ]] && grep -qi "volume locked" <<<"$2"' _ "$CODE" "$BODY"
    api GET /api/v1/collections
    expect "3. a data route (GET /api/v1/collections) is 503 while locked ($CODE)" test "$CODE" = 503
    api POST "$unlock" -H "$json" -d "$(jq -nc --arg p "$PASSPHRASE" '{passphrase: $p}')"
    expect "3. unlock without credentials is 401 ($CODE)" test "$CODE" = 401
    api POST "$unlock" -u "admin:$ADMIN_PASSWORD" -H "$json" -d '{"passphrase": "wrong-passphrase"}'
    expect "4. unlock with a wrong passphrase is 403 and says so ($CODE: $(short))" \
        bash -c '[[ "$1" == 403 ]] && grep -qi "passphrase" <<<"$2"' _ "$CODE" "$BODY"
    # The unlock itself goes through the web console in a real browser on the host: the
    # locked notice, a refused passphrase, the unlock, the wait for the daemon, and sign-in.
    local t=$SECONDS shots="$job/console-screenshots"
    mkdir -p "$shots"
    if (cd "$repo/ui" && CONSOLE_URL="$base" CONSOLE_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
        CONSOLE_PASSPHRASE="$PASSPHRASE" CONSOLE_SCREENSHOTS="$shots" \
        CONSOLE_CHROMIUM=/usr/bin/chromium node --test tests/locked.test.mjs >"$job/console.log" 2>&1); then
        ok "3. the console unlocks the volume in a browser and the admin signs in ($((SECONDS - t)) s)"
    else
        not_ok "3. the console unlocks the volume in a browser and the admin signs in (see $job/console.log)"
        sed 's/^/#   /' "$job/console.log" | tail -40 >>"$tap"
    fi
    t=$SECONDS
    wait_for 200 /readyz 300
    expect "3. /readyz is 200 after the unlock, without a restart ($((SECONDS - t)) s)" test "$CODE" = 200
    login
    expect "3. admin signs in after the unlock ($CODE)" test "$CODE" = 200
    if search_finds "$KNOWN_2"; then
        ok "3. the document is still there: search finds it"
    else
        not_ok "3. the document is still there: search finds it ($CODE: $(short))"
    fi
}

# snapshot PREFIX: the state a restore must bring back, into PREFIX.documents and PREFIX.users:
# each document's id, file, content hash, status and chunk count, and the users' names.
snapshot() {
    api GET /api/v1/collections/vmtest/documents -H "$(auth)"
    [[ "$CODE" == 200 ]] || return 1
    jq -S '[.documents[] | {id, filename, sha256, status, chunks}]' <<<"$BODY" >"$1.documents" || return 1
    api GET /api/v1/users -H "$(auth)"
    [[ "$CODE" == 200 ]] || return 1
    jq -S '[.[] | .name] | sort' <<<"$BODY" >"$1.users"
}

# Scenario 5, after the timer's backup: what the daemon says about it, and the state to restore.
host_backup() {
    local name metric
    name="$(cat "$job/backup-name" 2>/dev/null)"
    login
    expect "5. admin signs in ($CODE)" test "$CODE" = 200
    api GET /metrics -H "$(auth)"
    metric="$(awk '$1 == "sparkbrain_backup_last_success_timestamp_seconds" { print $2 }' <<<"$BODY")"
    expect "5. /metrics: sparkbrain_backup_last_success_timestamp_seconds ${metric:-missing} > 0" \
        awk -v m="$metric" 'BEGIN { exit !(m != "" && m + 0 > 0) }'
    grep -E '^sparkbrain_backup_' <<<"$BODY" | sed 's/^/# /' >>"$tap"
    api GET /api/v1/backups -H "$(auth)"
    expect "5. GET /api/v1/backups: last success is $name, encrypted, listed ($CODE: $(short))" \
        jq -e --arg n "$name" '.last_success.name == $n and .encrypted == true and .running == false
            and ([.backups[].name] | index($n)) != null' <<<"$BODY" >/dev/null
    # The unit authenticates with the daemon's local token; the audit log names that caller as
    # the local administrator, not as a user.
    api GET '/api/v1/audit?action=backup.create' -H "$(auth)"
    if jq -e --arg n "$name" '[.[] | select((.actor // "" | test("local"))
            and .outcome == "allowed" and (.target // "" | contains($n)))] | length > 0' \
        <<<"$BODY" >/dev/null 2>&1; then
        ok "5. the audit log has backup.create by the local administrator naming the archive"
    else
        not_ok "5. the audit log has backup.create by the local administrator naming the archive ($CODE: $(short))"
    fi
    snapshot "$job/before"
    expect "5. noted the documents ($(jq length "$job/before.documents" 2>/dev/null) in vmtest) and users before the restore" \
        test -s "$job/before.documents" -a -s "$job/before.users"
}

# Scenario 5, after the backup unit ran while the daemon held the volume it unlocked itself:
# the daemon made the newest archive (not the command on its own, on what the host sees).
host_unattended() {
    local name
    name="$(cat "$job/backup-name" 2>/dev/null)"
    login
    api GET /api/v1/backups -H "$(auth)"
    expect "5. the daemon made that backup, $name (GET /api/v1/backups: $CODE: $(short))" \
        jq -e --arg n "$name" '$n != "" and .last_success.name == $n' <<<"$BODY" >/dev/null
}

# Scenario 5, after the restore onto a new file system: the same state.
host_restored() {
    local t=$SECONDS
    wait_for 200 /readyz 300
    expect "5. /readyz is 200 after the restore ($((SECONDS - t)) s)" test "$CODE" = 200
    login
    expect "5. admin signs in with the restored password ($CODE)" test "$CODE" = 200
    snapshot "$job/after"
    expect "5. the same documents are back ($(jq -c '[.[] | .status]' "$job/after.documents" 2>/dev/null))" \
        bash -c 'test -s "$1.documents" && cmp -s "$1.documents" "$2.documents"' _ "$job/before" "$job/after"
    expect "5. the same users are back ($(jq -c . "$job/after.users" 2>/dev/null))" \
        bash -c 'test -s "$1.users" && cmp -s "$1.users" "$2.users"' _ "$job/before" "$job/after"
    if search_finds "$KNOWN_2"; then
        ok "5. search finds the known string in the restored indexes"
    else
        not_ok "5. search finds the known string in the restored indexes ($CODE: $(short))"
    fi
}

run_step() {
    case "$1" in
    index-1) host_index 2 "$KNOWN_1" ;;
    index-2) host_index 3 "$KNOWN_2" ;;
    locked) host_locked ;;
    unattended) host_unattended ;;
    backup) host_backup ;;
    restored) host_restored ;;
    *) not_ok "unknown host step $1" ;;
    esac
}

# ---- boot ---------------------------------------------------------------------------------------
printed=0
show_new() {
    local total
    total=$(wc -l <"$tap")
    if ((total > printed)); then
        sed -n "$((printed + 1)),${total}p" "$tap"
        printed=$total
    fi
}

# An emulated TPM 2.0 (swtpm), so that binding a volume key to the TPM is tested for real.
tpm_dir="$(mktemp -d /tmp/sparkbrain-vm-tpm.XXXXXX)"
swtpm socket --tpm2 --tpmstate "dir=$tpm_dir" --ctrl "type=unixio,path=$tpm_dir/swtpm.sock" \
    --flags not-need-init --terminate --daemon --log "file=$job/swtpm.log"
for _ in $(seq 50); do
    [[ -S "$tpm_dir/swtpm.sock" ]] && break
    sleep 0.1
done
echo "# booting the VM (TCG), daemon port forwarded to 127.0.0.1:$port, job folder $job"
vm_start=$SECONDS
deadline=$((SECONDS + vm_timeout))
# Niced: the emulator takes every core it is given.
nice -n 5 qemu-system-x86_64 \
    -accel tcg,thread=multi,tb-size=256 -cpu max -smp 2 -m 2048 -machine q35 \
    -nodefaults -display none -no-reboot -monitor none -serial "file:$job/serial.log" \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
    -append "root=LABEL=root rw console=ttyS0 net.ifnames=0 panic=-1" \
    -drive "file=$img/root.img,if=none,id=root,format=raw,snapshot=on" -device virtio-blk-pci,drive=root,serial=rootdisk \
    -drive "file=$job/datadisk.img,if=none,id=data,format=raw" -device virtio-blk-pci,drive=data,serial=datadisk \
    -drive "file=$job/fsdisk.img,if=none,id=fs,format=raw" -device virtio-blk-pci,drive=fs,serial=fsdisk \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:8470" -device virtio-net-pci,netdev=n0 \
    -virtfs "local,path=$job,mount_tag=job,security_model=none,id=job" \
    -chardev "socket,id=tpm,path=$tpm_dir/swtpm.sock" -tpmdev emulator,id=tpm0,chardev=tpm -device tpm-tis,tpmdev=tpm0 \
    -device virtio-rng-pci &
qemu=$!

timed_out=0
while :; do
    show_new
    [[ -e "$job/guest.rc" ]] && break
    kill -0 "$qemu" 2>/dev/null || break
    if ((SECONDS >= deadline)); then
        timed_out=1
        break
    fi
    for req in "$job"/steps/*.req; do
        [[ -e "$req" ]] || continue
        name="$(basename "$req" .req)"
        [[ -e "$job/steps/$name.done" ]] && continue
        run_step "$name"
        touch "$job/steps/$name.done"
    done
    sleep 1
done
# The guest powers off after its script; give it a moment, then make sure QEMU is gone.
for _ in $(seq 60); do
    kill -0 "$qemu" 2>/dev/null || break
    sleep 1
done
if kill -0 "$qemu" 2>/dev/null; then
    kill "$qemu" 2>/dev/null
    sleep 2
    kill -9 "$qemu" 2>/dev/null
fi
wait "$qemu" 2>/dev/null
vm_wall=$((SECONDS - vm_start))
# swtpm ends with QEMU's connection; its state goes with the run.
pkill -f "swtpm socket --tpm2 --tpmstate dir=$tpm_dir" 2>/dev/null
rm -rf "$tpm_dir"
show_new

if ((timed_out)); then
    not_ok "the VM finished within ${vm_timeout} s (QEMU killed)"
elif [[ "$(cat "$job/guest.rc" 2>/dev/null)" != 0 ]]; then
    not_ok "the guest script ran to its end (guest.rc: $(cat "$job/guest.rc" 2>/dev/null || echo missing); see guest.log, serial.log)"
fi
show_new
rm -f "$job/datadisk.img" "$job/fsdisk.img" "$job/sparkbrain.deb"

passed=$(grep -c '^ok - ' "$tap")
failed=$(grep -c '^not ok - ' "$tap")
echo "# VM wall time: ${vm_wall} s; logs: $job (guest.log, serial.log, doctor.txt, security*.txt, lintian.txt)"
echo "$passed passed, $failed failed"
((failed == 0))
