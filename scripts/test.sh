#!/usr/bin/env bash
# Runs everything CI checks, on a fresh machine or a developer's: installs what the tests need,
# then formatting, lints (warnings are errors) and the whole test suite with real processes.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# System packages the tests use (the data-plane tests need sshd and ssh-keygen; the query API
# test runs promtool, which Debian ships in the prometheus package; the alerts test runs a real
# Alertmanager; the export test runs victoria-metrics).
need_pkgs=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
# The discovery test builds network namespaces with `ip netns` (iproute2).
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need_pkgs+=(iproute2)
[ -x /usr/bin/prometheus-alertmanager ] || [ -x /usr/bin/alertmanager ] || need_pkgs+=(prometheus-alertmanager)
# The remote-write export test sends to a VictoriaMetrics server it starts itself.
[ -x /usr/bin/victoria-metrics ] || need_pkgs+=(victoria-metrics)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

log "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --profile ci
else
  cargo test --locked
fi
