#!/usr/bin/env bash
# A private sshd on 127.0.0.1 for the pxpool SSH tests.
#   infra/sshd.sh start|stop|status|env
# State (keys, config, pid file, log) lives in $PXPOOL_INFRA_DIR/sshd
# (default /tmp/pxpool-infra/sshd); the port is $PXPOOL_TEST_SSH_PORT (default 22022).
set -euo pipefail

INFRA_DIR="${PXPOOL_INFRA_DIR:-/tmp/pxpool-infra}"
STATE="$INFRA_DIR/sshd"
PORT="${PXPOOL_TEST_SSH_PORT:-22022}"
HOST=127.0.0.1
USER_NAME=root
SSHD=/usr/sbin/sshd
START_TIMEOUT="${PXPOOL_INFRA_SSHD_TIMEOUT:-15}"

HOST_KEY="$STATE/ssh_host_ed25519_key"
CLIENT_KEY="$STATE/id_ed25519"
AUTH_KEYS="$STATE/authorized_keys"
SSHD_CONFIG="$STATE/sshd_config"
SSH_CONFIG="$STATE/ssh_config"
PID_FILE="$STATE/sshd.pid"
LOG="$STATE/sshd.log"

log() { echo "infra: sshd: $*" >&2; }
die() {
    echo "infra: sshd: ERROR: $*" >&2
    if [[ "${SHOW_LOG:-1}" == 0 ]]; then
        exit 1
    elif [[ -s "$LOG" ]]; then
        echo "infra: sshd: last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
    else
        echo "infra: sshd: (log $LOG is empty or missing)" >&2
    fi
    exit 1
}

ssh_probe() {
    timeout 10 ssh -i "$CLIENT_KEY" -p "$PORT" \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR \
        "$USER_NAME@$HOST" true </dev/null >/dev/null 2>&1
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" 2>/dev/null
}

# Prints the pid of our sshd if it is alive, else nothing (and drops a stale pid file).
our_pid() {
    [[ -f "$PID_FILE" ]] || return 0
    local pid
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    if [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$SSHD_CONFIG"; then
        echo "$pid"
    else
        rm -f "$PID_FILE"
    fi
}

make_keys() {
    mkdir -p "$STATE"
    chmod 0700 "$STATE"
    if [[ ! -s "$HOST_KEY" || ! -s "$HOST_KEY.pub" ]]; then
        rm -f "$HOST_KEY" "$HOST_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C pxpool-test-host -f "$HOST_KEY" >/dev/null
    fi
    if [[ ! -s "$CLIENT_KEY" || ! -s "$CLIENT_KEY.pub" ]]; then
        rm -f "$CLIENT_KEY" "$CLIENT_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C pxpool-test-client -f "$CLIENT_KEY" >/dev/null
    fi
    chmod 0600 "$HOST_KEY" "$CLIENT_KEY"
    cp "$CLIENT_KEY.pub" "$AUTH_KEYS"
    chmod 0600 "$AUTH_KEYS"
}

write_configs() {
    # OpenSSH refuses key logins to a locked account ("!" in shadow) when UsePAM is no;
    # only then fall back to PAM, which does not apply that check.
    local use_pam=no
    if [[ "$(getent shadow "$USER_NAME" 2>/dev/null | cut -d: -f2)" == '!'* ]]; then
        log "account $USER_NAME is locked in /etc/shadow; using UsePAM yes so key login works"
        use_pam=yes
    fi
    cat >"$SSHD_CONFIG" <<EOF
# Written by infra/sshd.sh: private sshd for the pxpool tests. Do not edit.
Port $PORT
ListenAddress $HOST
AddressFamily inet
HostKey $HOST_KEY
PidFile $PID_FILE
AuthorizedKeysFile $AUTH_KEYS
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM $use_pam
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
GatewayPorts no
MaxStartups 100:30:200
MaxSessions 100
LogLevel INFO
Subsystem sftp internal-sftp
EOF
    cat >"$SSH_CONFIG" <<EOF
# Written by infra/sshd.sh: use with ssh -F $SSH_CONFIG pxpool-test
Host pxpool-test
    HostName $HOST
    Port $PORT
    User $USER_NAME
    IdentityFile $CLIENT_KEY
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    BatchMode yes
    LogLevel ERROR
EOF
}

cmd_start() {
    [[ -x "$SSHD" ]] || die "$SSHD not found; run infra/install.sh first"
    command -v ssh >/dev/null || die "ssh client not found; run infra/install.sh first"
    local pid
    pid="$(our_pid)"
    if [[ -n "$pid" ]] && [[ -f "$CLIENT_KEY" ]] && ssh_probe; then
        log "already running (pid $pid, port $PORT)"
        write_configs_if_missing
        return 0
    fi
    if [[ -n "$pid" ]]; then
        log "pid $pid is alive but not answering; restarting it"
        cmd_stop
    fi
    if port_open; then
        if command -v ss >/dev/null; then ss -ltnp "sport = :$PORT" >&2 2>/dev/null || true; fi
        SHOW_LOG=0 die "port $HOST:$PORT is already in use by another process; set PXPOOL_TEST_SSH_PORT to a free port"
    fi
    make_keys
    write_configs
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
    : >"$LOG"
    "$SSHD" -t -f "$SSHD_CONFIG" >>"$LOG" 2>&1 || die "sshd rejected $SSHD_CONFIG"
    log "starting sshd on $HOST:$PORT (state $STATE, log $LOG)"
    "$SSHD" -f "$SSHD_CONFIG" -E "$LOG" || die "sshd failed to start"
    local deadline=$((SECONDS + START_TIMEOUT))
    until ssh_probe; do
        if ((SECONDS >= deadline)); then
            die "ssh $USER_NAME@$HOST -p $PORT did not succeed within ${START_TIMEOUT}s"
        fi
        sleep 0.3
    done
    log "ready: ssh -F $SSH_CONFIG pxpool-test (pid $(our_pid))"
}

write_configs_if_missing() {
    [[ -f "$SSH_CONFIG" ]] || write_configs
}

wait_gone() { # pid seconds
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

descendants() { # pid: prints all descendant pids, depth first
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
        echo "$c"
        descendants "$c"
    done
}

cmd_stop() {
    local pid sessions
    pid="$(our_pid)"
    if [[ -z "$pid" ]]; then
        log "not running"
        return 0
    fi
    # Session processes (sshd: root@notty) are children of the listener, and the
    # commands run over ssh are theirs: end the whole tree, not only the listener.
    sessions="$(descendants "$pid" | tr '\n' ' ')"
    log "stopping sshd pid $pid${sessions:+ and its session processes: $sessions}"
    kill -TERM "$pid" 2>/dev/null || true
    # shellcheck disable=SC2086
    [[ -z "${sessions// /}" ]] || kill -TERM $sessions 2>/dev/null || true
    if ! wait_gone "$pid" 10; then
        log "sshd pid $pid ignored SIGTERM for 10s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || die "sshd pid $pid is still alive after SIGKILL"
    fi
    local c
    for c in $sessions; do
        wait_gone "$c" 5 || kill -KILL "$c" 2>/dev/null || true
    done
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    local pid
    pid="$(our_pid)"
    if [[ -z "$pid" ]]; then
        echo "sshd: not running (port $PORT, state $STATE)"
        return 3
    fi
    if ssh_probe; then
        echo "sshd: running, pid $pid, $USER_NAME@$HOST:$PORT, key $CLIENT_KEY, config $SSH_CONFIG"
        return 0
    fi
    echo "sshd: pid $pid alive but ssh to $HOST:$PORT fails (log $LOG)"
    return 1
}

cmd_env() {
    printf 'export PXPOOL_TEST_SSH_HOST=%q\n' "$HOST"
    printf 'export PXPOOL_TEST_SSH_PORT=%q\n' "$PORT"
    printf 'export PXPOOL_TEST_SSH_USER=%q\n' "$USER_NAME"
    printf 'export PXPOOL_TEST_SSH_KEY=%q\n' "$CLIENT_KEY"
    printf 'export PXPOOL_TEST_SSH_CONFIG=%q\n' "$SSH_CONFIG"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
