# shellcheck shell=bash
# A private sshd on 127.0.0.1 for local runs (sourced by scripts/quickstart.sh).
#
#   source scripts/lib/sshd.sh
#   sqd_sshd_start DIR   # keys, config and log under DIR; exports SQD_SSHD_PORT, SQD_SSHD_USER,
#                        # SQD_SSHD_KEY (client private key), SQD_SSHD_KNOWN_HOSTS
#   sqd_sshd_share DIR...  # create DIRs for the login user: it claims and removes files there
#   sqd_sshd_stop DIR
#
# The login user: as root, a dedicated system user `sqd-test` (shell /bin/sh, home
# /var/lib/sqd-test; created when missing). sshd runs every command through the login user's
# shell and bash reads ~/.bashrc for each, so logging in as root made every command wait on
# whatever root's rc file does (a stale pyenv shim lock stalled each login for up to 60 s); a
# non-interactive `sh -c` reads no rc file. It must be able to traverse DIR's parents; when it
# cannot, root logs in as itself with a warning. As an ordinary user: yourself. SQD_SSHD_USER,
# when set before sqd_sshd_start, names the login user instead.
#
# SQD_SSHD_EXTRA_CONFIG, when set, is appended to sshd_config (e.g. "Ciphers ..." so every
# client of a benchmark negotiates the same cipher).
#
# Keys already in DIR are reused, and so is the previous port when it is still free, so re-running
# keeps the same known_hosts. Installs nothing: sshd, ssh, ssh-keygen and python3 must be present
# (and useradd, as root).
# Safe under `set -euo pipefail`; changes no shell options. Works as root (sshd then needs
# /run/sshd, created if missing) and as an ordinary user (sshd runs unprivileged for that user).

# Prints the absolute path of sshd (it refuses to run from a relative path).
_sqd_sshd_bin() {
  local p
  p=$(command -v sshd 2>/dev/null || true)
  case "$p" in
    /*) [ -x "$p" ] && { printf '%s\n' "$p"; return 0; } ;;
  esac
  for p in /usr/sbin/sshd /usr/local/sbin/sshd /sbin/sshd /usr/bin/sshd; do
    [ -x "$p" ] && { printf '%s\n' "$p"; return 0; }
  done
  echo "sqd_sshd: sshd not found (install openssh-server)" >&2
  return 1
}

_sqd_sshd_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Exit status 0 when PORT on 127.0.0.1 can be bound right now.
_sqd_sshd_port_free() {
  python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1",int(sys.argv[1])))' "$1" 2>/dev/null
}

_sqd_sshd_test_user=sqd-test
_sqd_sshd_test_home=/var/lib/sqd-test

# Creates the dedicated login user and its empty home when missing (root only). Its password
# field is `*`, not useradd's `!`: with UsePAM no, sshd refuses a `!` (locked) account even for
# key logins. Another run may create it at the same moment: "already exists" is fine.
_sqd_sshd_ensure_test_user() {
  local u=$_sqd_sshd_test_user home=$_sqd_sshd_test_home
  if ! getent passwd "$u" >/dev/null; then
    useradd --system --shell /bin/sh --home-dir "$home" --no-create-home --password '*' \
      "$u" 2>/dev/null || getent passwd "$u" >/dev/null || {
      echo "sqd_sshd: could not create the SSH login user $u (useradd)" >&2
      return 1
    }
  fi
  mkdir -p "$home"
  chown "$u:" "$home"
  chmod 755 "$home"
}

# Prints the login user for DIR (see the top of this file).
_sqd_sshd_login_user() {
  local dir=$1 me
  me=$(id -un)
  if [ -n "${SQD_SSHD_USER:-}" ]; then
    printf '%s\n' "$SQD_SSHD_USER"
  elif [ "$(id -u)" != 0 ]; then
    printf '%s\n' "$me"
  else
    _sqd_sshd_ensure_test_user || return 1
    if runuser -u "$_sqd_sshd_test_user" -- test -x "$dir"; then
      printf '%s\n' "$_sqd_sshd_test_user"
    else
      echo "sqd_sshd: $_sqd_sshd_test_user cannot reach $dir (a parent directory is not searchable);" \
        "logging in as $me instead: its shell rc files run for every SSH command" >&2
      printf '%s\n' "$me"
    fi
  fi
}

# Creates each DIR (and parents) if missing, owned by the login user (SQD_SSHD_USER, set by
# sqd_sshd_start) with mode 0755: it renames claims and removes the files others write there.
sqd_sshd_share() {
  local d
  for d in "$@"; do
    mkdir -p "$d"
    if [ "${SQD_SSHD_USER:-}" != "$(id -un)" ]; then
      chown "${SQD_SSHD_USER:?sqd_sshd_share: call sqd_sshd_start first}:" "$d"
    fi
    chmod 755 "$d"
  done
}

# Prints the pid in DIR/sshd.pid when that process is alive and is the sshd started for DIR.
_sqd_sshd_live_pid() {
  local dir=$1 pid
  [ -f "$dir/sshd.pid" ] || return 1
  pid=$(tr -dc '0-9' <"$dir/sshd.pid")
  [ -n "$pid" ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/sshd_config" || return 1
  printf '%s\n' "$pid"
}

# The ssh options that pin this sshd (the known_hosts path quoted: ssh splits it on spaces).
_sqd_sshd_ssh_opts() {
  local dir=$1
  printf '%s\n' -o BatchMode=yes -o StrictHostKeyChecking=yes \
    -o "UserKnownHostsFile=\"$dir/known_hosts\"" -o GlobalKnownHostsFile=/dev/null \
    -o IdentitiesOnly=yes -o ConnectTimeout=5 -i "$dir/client_ed25519_key"
}

sqd_sshd_start() {
  if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: sqd_sshd_start DIR" >&2
    return 2
  fi
  local dir sshd user port pid attempt ok deadline host_pub penalties
  mkdir -p "$1"
  dir=$(cd "$1" && pwd -P)
  sshd=$(_sqd_sshd_bin) || return 1
  # The login user reads authorized_keys here (sshd opens it with that user's identity); the
  # private keys stay 0600 to the runner.
  chmod 755 "$dir"
  user=$(_sqd_sshd_login_user "$dir") || return 1

  # A previous sshd for DIR (re-run): stop it, remembering its port.
  if _sqd_sshd_live_pid "$dir" >/dev/null; then
    sqd_sshd_stop "$dir"
  fi

  # Keys: reused when present.
  if [ ! -f "$dir/host_ed25519_key" ] || [ ! -f "$dir/host_ed25519_key.pub" ]; then
    rm -f "$dir/host_ed25519_key" "$dir/host_ed25519_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C sqd-test-host -f "$dir/host_ed25519_key" </dev/null >/dev/null
  fi
  if [ ! -f "$dir/client_ed25519_key" ] || [ ! -f "$dir/client_ed25519_key.pub" ]; then
    rm -f "$dir/client_ed25519_key" "$dir/client_ed25519_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C sqd-test-client -f "$dir/client_ed25519_key" </dev/null >/dev/null
  fi
  chmod 600 "$dir/host_ed25519_key" "$dir/client_ed25519_key"
  cp "$dir/client_ed25519_key.pub" "$dir/authorized_keys"
  chmod 600 "$dir/authorized_keys"
  [ "$user" = "$(id -un)" ] || chown "$user:" "$dir/authorized_keys"

  # sshd (as root) refuses to start without its privilege-separation directory.
  if [ "$(id -u)" = 0 ] && [ ! -d /run/sshd ]; then
    mkdir -p /run/sshd && chmod 0755 /run/sshd
  fi

  host_pub=$(awk '{print $1" "$2}' "$dir/host_ed25519_key.pub")
  ok=0
  penalties=1
  for attempt in 1 2 3 4 5; do
    port=""
    if [ "$attempt" = 1 ] && [ -f "$dir/sshd.port" ]; then
      port=$(tr -dc '0-9' <"$dir/sshd.port")
      if [ -n "$port" ] && ! _sqd_sshd_port_free "$port"; then
        port=""
      fi
    fi
    [ -n "$port" ] || port=$(_sqd_sshd_free_port)
    printf '%s\n' "$port" >"$dir/sshd.port"
    printf '[127.0.0.1]:%s %s\n' "$port" "$host_pub" >"$dir/known_hosts"
    # StrictModes no: DIR may live under /tmp (mode 1777), which StrictModes refuses on the path
    # to authorized_keys.
    cat >"$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey "$dir/host_ed25519_key"
PidFile "$dir/sshd.pid"
AuthorizedKeysFile "$dir/authorized_keys"
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AllowUsers $user
Subsystem sftp internal-sftp
MaxSessions 100
MaxStartups 100:30:200
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
LogLevel VERBOSE
${SQD_SSHD_EXTRA_CONFIG:-}
EOF
    # OpenSSH >= 9.8 would penalise 127.0.0.1 after failed logins; older sshd rejects the option.
    if [ "$penalties" = 1 ]; then
      echo "PerSourcePenalties no" >>"$dir/sshd_config"
    fi
    if [ "$penalties" = 1 ] && ! "$sshd" -t -f "$dir/sshd_config" 2>/dev/null; then
      penalties=0
      sed -i '/^PerSourcePenalties /d' "$dir/sshd_config"
    fi
    "$sshd" -t -f "$dir/sshd_config" || {
      echo "sqd_sshd: sshd rejected $dir/sshd_config" >&2
      return 1
    }
    : >"$dir/sshd.log"
    "$sshd" -D -e -f "$dir/sshd_config" </dev/null >>"$dir/sshd.log" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$dir/sshd.pid"

    # Readiness: an ssh that pins the host key and uses the client key (≤ 10 s).
    local -a opts
    mapfile -t opts < <(_sqd_sshd_ssh_opts "$dir")
    deadline=$((SECONDS + 10))
    while [ "$SECONDS" -lt "$deadline" ]; do
      if ! kill -0 "$pid" 2>/dev/null; then
        break
      fi
      if timeout 3 ssh "${opts[@]}" -p "$port" -- "$user@127.0.0.1" true </dev/null >/dev/null 2>>"$dir/ssh-check.log"; then
        ok=1
        break
      fi
      sleep 0.1
    done
    [ "$ok" = 1 ] && break
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      echo "sqd_sshd: sshd on 127.0.0.1:$port did not accept the client key within 10 s; see $dir/sshd.log:" >&2
      tail -n 20 "$dir/sshd.log" >&2
      tail -n 5 "$dir/ssh-check.log" >&2 || true
      return 1
    fi
    wait "$pid" 2>/dev/null || true
    if ! grep -q 'Address already in use' "$dir/sshd.log"; then
      echo "sqd_sshd: sshd exited at start; see $dir/sshd.log:" >&2
      tail -n 20 "$dir/sshd.log" >&2
      return 1
    fi
    # Port taken between choosing it and sshd binding it: try another one.
  done
  if [ "$ok" != 1 ]; then
    echo "sqd_sshd: no free port for sshd after 5 attempts" >&2
    return 1
  fi
  rm -f "$dir/ssh-check.log"

  export SQD_SSHD_PORT=$port
  export SQD_SSHD_USER=$user
  export SQD_SSHD_KEY=$dir/client_ed25519_key
  export SQD_SSHD_KNOWN_HOSTS=$dir/known_hosts
}

sqd_sshd_stop() {
  if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: sqd_sshd_stop DIR" >&2
    return 2
  fi
  local dir pid kids i
  [ -d "$1" ] || return 0
  dir=$(cd "$1" && pwd -P)
  pid=$(_sqd_sshd_live_pid "$dir") || { rm -f "$dir/sshd.pid"; return 0; }
  # Per-connection sshd processes are the listener's children; end them too so open
  # connections (e.g. ssh multiplexing masters) do not outlive the stop.
  kids=$(ps -o pid= --ppid "$pid" 2>/dev/null | tr -s ' \n' ' ' || true)
  kill -TERM "$pid" 2>/dev/null || true
  for i in $kids; do kill -TERM "$i" 2>/dev/null || true; done
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  for i in $kids; do kill -KILL "$i" 2>/dev/null || true; done
  rm -f "$dir/sshd.pid"
}
