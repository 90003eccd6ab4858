# shellcheck shell=bash
# A private sshd on 127.0.0.1 for local runs (sourced by scripts/quickstart.sh).
#
#   source scripts/lib/sshd.sh
#   sqd_sshd_start DIR   # keys, config and log under DIR; exports SQD_SSHD_PORT, SQD_SSHD_USER,
#                        # SQD_SSHD_KEY (client private key), SQD_SSHD_KNOWN_HOSTS
#   sqd_sshd_stop DIR
#
# SQD_SSHD_EXTRA_CONFIG, when set, is appended to sshd_config (e.g. "Ciphers ..." so every
# client of a benchmark negotiates the same cipher).
#
# Keys already in DIR are reused, and so is the previous port when it is still free, so re-running
# keeps the same known_hosts. Installs nothing: sshd, ssh, ssh-keygen and python3 must be present.
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
  chmod 700 "$dir"
  sshd=$(_sqd_sshd_bin) || return 1
  user=$(id -un)

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
      if timeout 3 ssh "${opts[@]}" -p "$port" "$user@127.0.0.1" true </dev/null >/dev/null 2>>"$dir/ssh-check.log"; then
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
