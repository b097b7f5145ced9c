# Shell helpers shared by scripts/demo and scripts/test-services (sourced, not run).
# Everything here is idempotent and quick when its work is already done.

# Whether something accepts TCP connections on 127.0.0.1:PORT.
answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# apt-get install, with at most one apt-get update per run (shared through the environment
# with the scripts this one calls).
apt_install() {
  if [ "${TEST_SERVICES_APT_UPDATED:-}" != 1 ]; then
    apt-get update -q
    export TEST_SERVICES_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# JupyterHub's proxy, a Node.js program (npm installs it in a few seconds). The major
# version the tests and the demo run with is pinned, so that a new major (a changed API or
# command line) is never picked up unnoticed on a fresh machine.
CHP_VERSION=5
install_proxy_once() {
  command -v configurable-http-proxy >/dev/null && return
  command -v npm >/dev/null || apt_install npm
  npm install -g --silent "configurable-http-proxy@$CHP_VERSION"
}

# Chromium for the browser tests (Playwright drives /usr/bin/chromium; never
# `playwright install`, which downloads a browser of its own).
install_chromium_once() {
  [ -x /usr/bin/chromium ] || apt_install chromium
}

# A single-node Slurm for the Slurm tests (tests/support/slurm.py starts and stops its daemons
# itself, from a slurm.conf of its own; apt never starts them here), and sudo, through which
# batchspawner runs sbatch, squeue and scancel as the job's user.
install_slurm_once() {
  local missing=()
  command -v munged >/dev/null || [ -x /usr/sbin/munged ] || missing+=(munge)
  [ -x /usr/sbin/slurmctld ] || missing+=(slurmctld)
  [ -x /usr/sbin/slurmd ] || missing+=(slurmd)
  [ -x /usr/bin/sbatch ] || missing+=(slurm-client)
  command -v sudo >/dev/null || missing+=(sudo)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}
