#!/usr/bin/env bash
# Deploys the notification system to Google Cloud. Not written yet: see issue
# "Operations" (deploy.sh, cloudbuild.yaml). This stub refuses to pretend.
set -euo pipefail
echo "deploy.sh is not implemented yet (operations issue)" >&2
exit 1
