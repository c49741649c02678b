#!/usr/bin/env bash
# System packages the tests need: Java for the emulator jars, Debian's Chromium
# for the browser tests, Node.js and npm for the browser package (clients/web). Installed only when missing and when we may (root with
# apt-get); otherwise say what is missing and let the tests report it.
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
if [ ! -x /usr/bin/chromium ]; then
  missing+=(chromium)
fi
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# Linting deploy.sh in tests/ops needs the ShellCheck package.
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
# Two ops checks run the real gcloud offline (tests/ops/test_monitoring_schema.py,
# test_real_gcloud_parses.py); Debian does not package it, and under CI they fail without it.
if ! command -v gcloud >/dev/null 2>&1; then
  echo "warning: gcloud is missing; install google-cloud-cli from Google's apt repository" \
    "(https://cloud.google.com/sdk/docs/install#deb) for the ops checks" >&2
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "warning: missing Debian packages (${missing[*]}); install them for the full suite" >&2
fi
