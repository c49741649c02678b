#!/usr/bin/env bash
# Deploy the notification system to Google Cloud (see docs/operations.md).
#
#   ./deploy.sh --project P [--region R] [--dry-run] [--jwt-secret-file F] [--alert-channels C1,C2]
#               [--build-dir D] [--stage-only] [infra] [ingest] [stream] [cleanup] [monitoring]
#   ./deploy.sh --project P [--region R] [--dry-run] rollback [ingest] [stream] [cleanup]
#
# Without component names it deploys all of them, in that order (the others assume
# infra has run once: it makes the topics, the secret and the service accounts). It is
# idempotent: every resource is described before it is created, so a second run
# creates nothing (the functions and the service are redeployed with the current
# code, IAM bindings are re-added, which changes nothing when they exist).
# rollback sends each named component's traffic (default: all three) back to the
# revision before the one serving now; the next deploy of it serves the latest again.
# --dry-run prints every command it would run (prefixed "+ ") and runs none; it
# assumes nothing exists yet. --stage-only builds the upload folders and stops.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

PROJECT="${GOOGLE_CLOUD_PROJECT:-}"
REGION="${REGION:-us-central1}"
FIRESTORE_LOCATION="${FIRESTORE_LOCATION:-}"
DRY_RUN=0
STAGE_ONLY=0
JWT_SECRET_FILE=""
ALERT_CHANNELS=""
BUILD_DIR="$ROOT/build"
COMPONENTS=()
ACTION=deploy

# Names of everything deploy creates.
CONTENT_TOPIC="${CONTENT_EVENTS_TOPIC:-content-generation-events}"
DEAD_LETTER_TOPIC="${CONTENT_EVENTS_DEAD_LETTER_TOPIC:-content-generation-events-dead-letter}"
NOTIFICATIONS_TOPIC="${NOTIFICATIONS_TOPIC:-user-notifications}"
DEAD_LETTER_SUBSCRIPTION="${DEAD_LETTER_TOPIC}-inspect"
SECRET_NAME="notifications-jwt-secret"
INGEST_FUNCTION="notifications-ingest"
STREAM_SERVICE="notifications-stream"
CLEANUP_FUNCTION="notifications-cleanup"
SCHEDULER_JOB="notifications-cleanup-every-5m"
STREAM_ROLE="notificationsStreamSubscriptions"
CLEANUP_ROLE="notificationsCleanupSubscriptions"
APIS=(
  cloudbuild.googleapis.com cloudfunctions.googleapis.com run.googleapis.com eventarc.googleapis.com
  pubsub.googleapis.com firestore.googleapis.com secretmanager.googleapis.com cloudscheduler.googleapis.com
  artifactregistry.googleapis.com iam.googleapis.com logging.googleapis.com monitoring.googleapis.com
)
# Streams end before Cloud Run's request timeout (3600 s) so clients resume by replay, not by error.
RUN_TIMEOUT=3600
SSE_MAX_STREAM_SECONDS=3300
# Probes of the stream service (functions/stream/probes.py), answered from memory. Startup: up to
# 120 s to start and subscribe. Liveness: a minute without an answer restarts the instance, which
# cuts its streams, so it is slow to trigger.
PROBES=/api/v1/notifications
STARTUP_PROBE="httpGet.path=$PROBES/ready,periodSeconds=2,timeoutSeconds=1,failureThreshold=60"
LIVENESS_PROBE="httpGet.path=$PROBES/live,periodSeconds=15,timeoutSeconds=5,failureThreshold=4"
DASHBOARD_FILE="$ROOT/ops/dashboards/notifications.json"

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --project) PROJECT="${2:?--project needs a value}"; shift 2 ;;
    --project=*) PROJECT="${1#*=}"; shift ;;
    --region) REGION="${2:?--region needs a value}"; shift 2 ;;
    --region=*) REGION="${1#*=}"; shift ;;
    --jwt-secret-file) JWT_SECRET_FILE="${2:?--jwt-secret-file needs a path}"; shift 2 ;;
    --jwt-secret-file=*) JWT_SECRET_FILE="${1#*=}"; shift ;;
    --alert-channels) ALERT_CHANNELS="${2:?--alert-channels needs a value}"; shift 2 ;;
    --alert-channels=*) ALERT_CHANNELS="${1#*=}"; shift ;;
    --build-dir) BUILD_DIR="${2:?--build-dir needs a path}"; shift 2 ;;
    --build-dir=*) BUILD_DIR="${1#*=}"; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --stage-only) STAGE_ONLY=1; shift ;;
    -h|--help) usage 0 ;;
    infra|ingest|stream|cleanup|monitoring) COMPONENTS+=("$1"); shift ;;
    rollback) ACTION=rollback; shift ;;
    *) echo "deploy.sh: unknown argument: $1" >&2; usage 2 ;;
  esac
done
if [ "$ACTION" = rollback ]; then
  for component in "${COMPONENTS[@]}"; do
    case "$component" in
      ingest|stream|cleanup) ;;
      *) echo "deploy.sh: rollback applies to ingest, stream and cleanup, not $component" >&2; exit 2 ;;
    esac
  done
  [ ${#COMPONENTS[@]} -gt 0 ] || COMPONENTS=(ingest stream cleanup)
fi
[ ${#COMPONENTS[@]} -gt 0 ] || COMPONENTS=(infra ingest stream cleanup monitoring)
if [ "$STAGE_ONLY" = 0 ] && [ -z "$PROJECT" ]; then
  echo "deploy.sh: --project is required (or GOOGLE_CLOUD_PROJECT)" >&2
  exit 2
fi
FIRESTORE_LOCATION="${FIRESTORE_LOCATION:-$REGION}"

sa_email() { echo "$1@${PROJECT}.iam.gserviceaccount.com"; }
INGEST_SA="$(sa_email notif-ingest)"
TRIGGER_SA="$(sa_email notif-ingest-trigger)"
STREAM_SA="$(sa_email notif-stream)"
CLEANUP_SA="$(sa_email notif-cleanup)"
SCHEDULER_SA="$(sa_email notif-scheduler)"

log() { echo "deploy: $*" >&2; }

# Print a command; run it unless this is a dry run.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  [ "$DRY_RUN" = 1 ] || "$@"
}

# Run a read-only gcloud query; in a dry run nothing exists and nothing runs.
query() {
  if [ "$DRY_RUN" = 1 ]; then
    # On stderr: a query's stdout is usually captured by the caller.
    { printf '+ (query)'; printf ' %q' "$@"; printf '\n'; } >&2
    return 1
  fi
  "$@" 2>/dev/null
}

exists() { query "$@" >/dev/null; }

g() { run gcloud "$@" --project="$PROJECT" --quiet; }
gq() { query gcloud "$@" --project="$PROJECT" --quiet; }
gexists() { exists gcloud "$@" --project="$PROJECT" --quiet; }

# --- staging: each function uploads only its own folder --------------------

stage() {  # stage NAME: build/NAME with the component's folder, shared/ and one flat requirements.txt
  local name="$1" dest="$BUILD_DIR/$1"
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ stage $dest"
    return 0
  fi
  rm -rf "$dest"
  mkdir -p "$dest/functions/$name"
  cp "$ROOT/functions/__init__.py" "$dest/functions/__init__.py"
  cp -R "$ROOT/functions/$name/." "$dest/functions/$name/"
  cp -R "$ROOT/shared" "$dest/shared"
  # Only this component's pins and shared's: the ingest function ships no
  # Starlette, the stream service no Flask.
  grep -hvE '^(-r |#|$)' "$ROOT/shared/requirements.txt" "$ROOT/functions/$name/requirements.txt" >"$dest/requirements.txt"
  rm -f "$dest/shared/requirements.txt" "$dest/functions/$name/requirements.txt"
  if [ "$name" = stream ]; then
    # Cloud Run's Python buildpack starts the Procfile's web process (same command as docs/stream.md).
    cat >"$dest/Procfile" <<'PROCFILE'
web: python -m functions.stream.serve --host 0.0.0.0 --port ${PORT:-8080}
PROCFILE
    echo "3.11" >"$dest/.python-version"
  else
    # Cloud Functions loads main.py from the root of the upload.
    cp "$ROOT/functions/$name/main.py" "$dest/main.py"
  fi
  find "$dest" -name __pycache__ -type d -prune -exec rm -rf {} +
  log "staged $dest"
}

# --- infrastructure ----------------------------------------------------------

enable_apis() {
  local enabled missing=() api
  enabled="$(gq services list --enabled --format='value(config.name)' || true)"
  for api in "${APIS[@]}"; do
    grep -qx "$api" <<<"$enabled" || missing+=("$api")
  done
  [ ${#missing[@]} -eq 0 ] || g services enable "${missing[@]}"
}

ensure_sa() {  # ensure_sa ID DESCRIPTION
  gexists iam service-accounts describe "$(sa_email "$1")" ||
    g iam service-accounts create "$1" --display-name="$2"
}

ensure_role() {  # ensure_role ROLE_ID TITLE PERMISSIONS
  if gexists iam roles describe "$1"; then
    g iam roles update "$1" --permissions="$3"
  else
    g iam roles create "$1" --title="$2" --permissions="$3" --stage=GA
  fi
}

project_role() {  # project_role SA_EMAIL ROLE
  g projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$1" --role="$2" --condition=None
}

inbox_publisher() {  # inbox_publisher SA_EMAIL: publish to the stream instances' inbox topics, nothing else
  # The inboxes come and go with the instances, so the grant is on the project,
  # conditioned on the topic name (IAM conditions on Pub/Sub resource names).
  local expression="resource.name.startsWith(\"projects/$PROJECT/topics/stream-instance-\")"
  g projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$1" --role=roles/pubsub.publisher \
    --condition="expression=$expression,title=stream-instance-inboxes"
}

topic_role() {  # topic_role TOPIC SA_EMAIL ROLE
  g pubsub topics add-iam-policy-binding "$1" --member="serviceAccount:$2" --role="$3"
}

ensure_topic() {
  gexists pubsub topics describe "$1" || g pubsub topics create "$1"
}

ensure_secret() {
  if gexists secrets describe "$SECRET_NAME"; then
    return 0
  fi
  # The value goes through a file or a pipe, never on a command line.
  if [ -n "$JWT_SECRET_FILE" ]; then
    g secrets create "$SECRET_NAME" --replication-policy=automatic --data-file="$JWT_SECRET_FILE"
  else
    log "no --jwt-secret-file: generating a random 64-character JWT secret"
    echo "+ (random secret on stdin) |"
    if [ "$DRY_RUN" = 1 ]; then
      g secrets create "$SECRET_NAME" --replication-policy=automatic --data-file=-
    else
      python3 -c 'import secrets; print(secrets.token_urlsafe(48), end="")' |
        g secrets create "$SECRET_NAME" --replication-policy=automatic --data-file=-
    fi
  fi
}

ensure_firestore() {
  gexists firestore databases describe --database='(default)' ||
    g firestore databases create --database='(default)' --location="$FIRESTORE_LOCATION" --type=firestore-native

  local indexes="${FIRESTORE_INDEXES_FILE:-$ROOT/firestore.indexes.json}"
  if [ ! -f "$indexes" ]; then
    echo "deploy.sh: $indexes is missing (Firestore indexes and TTL policies)" >&2
    exit 1
  fi
  local group field state existing plan args
  # TTL first and synchronously: Firestore refuses a second operation on a field
  # (the index override below) while one is running on it.
  plan="$(python3 "$ROOT/ops/firestore_indexes.py" ttl "$indexes")"
  while IFS=$'\t' read -r group field; do
    [ -n "$group" ] || continue
    state="$(gq firestore indexes fields describe "$field" --collection-group="$group" \
      --format='value(ttlConfig.state)' || true)"
    case "$state" in
      ACTIVE|CREATING) ;;
      *) g firestore fields ttls update "$field" --collection-group="$group" --enable-ttl ;;
    esac
  done <<<"$plan"

  existing="$(gq firestore indexes composite list --format=json || echo '[]')"
  plan="$(printf '%s' "$existing" | python3 "$ROOT/ops/firestore_indexes.py" composite "$indexes")"
  while IFS= read -r args; do
    [ -n "$args" ] || continue
    # shellcheck disable=SC2086 # the helper prints --flag=value words without spaces
    g firestore indexes composite create $args --async
  done <<<"$plan"

  # Single-field overrides: indexes with collection-group scope (cleanup's expire_at
  # queries; gcloud can only set collection scope) and exemptions (an empty list),
  # all through the Firestore Admin REST API.
  # Described first, then judged (and each body written) by one helper run, not two per field.
  local described bodies=()
  described="$(mktemp -d)"
  plan="$(python3 "$ROOT/ops/firestore_indexes.py" overrides "$indexes")"
  while IFS=$'\t' read -r group field; do
    [ -n "$group" ] || continue
    gq firestore indexes fields describe "$field" --collection-group="$group" --format=json \
      >"$described/$group.$field.json" || echo '{}' >"$described/$group.$field.json"
  done <<<"$plan"
  if [ "$DRY_RUN" = 0 ]; then
    mkdir -p "$BUILD_DIR"
    bodies=("$BUILD_DIR")
  fi
  plan="$(python3 "$ROOT/ops/firestore_indexes.py" override-plan "$indexes" "$described" "${bodies[@]}")"
  rm -rf "$described"
  while IFS=$'\t' read -r group field; do
    [ -n "$group" ] || continue
    field_override "$group" "$field"
  done <<<"$plan"
}

field_override() {  # field_override GROUP FIELD (its body already written by override-plan)
  local url="https://firestore.googleapis.com/v1/projects/$PROJECT/databases/(default)/collectionGroups/$1/fields/$2?updateMask=indexConfig"
  local body="$BUILD_DIR/field-$1-$2.json"
  # The access token reaches curl on stdin (-H @-), never on its command line; retried
  # while Firestore still runs another operation on the field.
  local curl_args=(-sSf -o /dev/null --retry 6 --retry-all-errors --retry-delay 20
    -X PATCH -H @- -H 'Content-Type: application/json' --data-binary "@$body" "$url")
  echo "+ gcloud auth print-access-token | (Authorization header on stdin)"
  if [ "$DRY_RUN" = 1 ]; then
    run curl "${curl_args[@]}"
  else
    gcloud auth print-access-token --quiet | sed 's/^/Authorization: Bearer /' | run curl "${curl_args[@]}"
  fi
}

deploy_infra() {
  enable_apis
  ensure_topic "$CONTENT_TOPIC"
  ensure_topic "$DEAD_LETTER_TOPIC"
  ensure_topic "$NOTIFICATIONS_TOPIC"
  # Dead letters are kept a week for inspection and replay (docs/operations.md).
  gexists pubsub subscriptions describe "$DEAD_LETTER_SUBSCRIPTION" ||
    g pubsub subscriptions create "$DEAD_LETTER_SUBSCRIPTION" --topic="$DEAD_LETTER_TOPIC" \
      --message-retention-duration=7d --expiration-period=never --ack-deadline=60
  ensure_firestore
  ensure_secret

  ensure_sa notif-ingest "Notifications: ingest function"
  ensure_sa notif-ingest-trigger "Notifications: Pub/Sub trigger of the ingest function"
  ensure_sa notif-stream "Notifications: stream service"
  ensure_sa notif-cleanup "Notifications: cleanup function"
  ensure_sa notif-scheduler "Notifications: Cloud Scheduler caller of cleanup"
  # Narrower than roles/pubsub.editor: only what each needs on subscriptions and
  # on the stream instances' inbox topics (stream-instance-*, see docs/stream.md "Routing").
  ensure_role "$STREAM_ROLE" "Notifications stream: own instance inbox and subscriptions" \
    pubsub.subscriptions.create,pubsub.subscriptions.delete,pubsub.subscriptions.get,pubsub.subscriptions.consume,pubsub.topics.create,pubsub.topics.delete,pubsub.topics.attachSubscription
  ensure_role "$CLEANUP_ROLE" "Notifications cleanup: remove orphan subscriptions and inboxes" \
    pubsub.subscriptions.list,pubsub.subscriptions.get,pubsub.subscriptions.delete,pubsub.topics.list,pubsub.topics.delete

  # ingest: reads and writes notifications; publishes the live channel and dead letters.
  project_role "$INGEST_SA" roles/datastore.user
  topic_role "$NOTIFICATIONS_TOPIC" "$INGEST_SA" roles/pubsub.publisher
  topic_role "$DEAD_LETTER_TOPIC" "$INGEST_SA" roles/pubsub.publisher
  inbox_publisher "$INGEST_SA"
  # stream: notifications + connection registry; its own subscription on the channel; announces changes.
  project_role "$STREAM_SA" roles/datastore.user
  project_role "$STREAM_SA" "projects/$PROJECT/roles/$STREAM_ROLE"
  topic_role "$NOTIFICATIONS_TOPIC" "$STREAM_SA" roles/pubsub.subscriber
  topic_role "$NOTIFICATIONS_TOPIC" "$STREAM_SA" roles/pubsub.publisher
  topic_role "$NOTIFICATIONS_TOPIC" "$STREAM_SA" roles/pubsub.viewer
  inbox_publisher "$STREAM_SA"
  g secrets add-iam-policy-binding "$SECRET_NAME" --member="serviceAccount:$STREAM_SA" \
    --role=roles/secretmanager.secretAccessor
  # cleanup: deletes registry documents and expired notifications; lists and deletes orphan subscriptions.
  project_role "$CLEANUP_SA" roles/datastore.user
  project_role "$CLEANUP_SA" "projects/$PROJECT/roles/$CLEANUP_ROLE"
}

# --- the functions and the service ------------------------------------------------

common_env() {
  echo "GOOGLE_CLOUD_PROJECT=$PROJECT,CONTENT_EVENTS_TOPIC=$CONTENT_TOPIC,CONTENT_EVENTS_DEAD_LETTER_TOPIC=$DEAD_LETTER_TOPIC,NOTIFICATIONS_TOPIC=$NOTIFICATIONS_TOPIC,LOG_LEVEL=INFO"
}

deploy_ingest() {
  stage ingest
  g functions deploy "$INGEST_FUNCTION" --gen2 --region="$REGION" --runtime=python311 \
    --source="$BUILD_DIR/ingest" --entry-point=ingest_content_event \
    --trigger-topic="$CONTENT_TOPIC" --retry \
    --trigger-service-account="$TRIGGER_SA" --service-account="$INGEST_SA" \
    --memory=512Mi --timeout=60s --max-instances=100 \
    --set-env-vars="$(common_env)"
  # The Eventarc trigger's identity may invoke this function and nothing else.
  g functions add-invoker-policy-binding "$INGEST_FUNCTION" --region="$REGION" --member="serviceAccount:$TRIGGER_SA"
  serve_latest "$INGEST_FUNCTION"
}

# After a rollback, traffic stays pinned to the old revision through later deploys
# (Cloud Run keeps a service's traffic split): a deploy means "serve this code".
serve_latest() {  # serve_latest SERVICE (a gen2 function is a Cloud Run service of its name)
  g run services update-traffic "$1" --region="$REGION" --to-latest
}

deploy_stream() {
  stage stream
  # min-instances=1: one warm instance keeps its channel subscription and instance
  # record, so the first stream after a quiet period does not wait for a cold start
  # plus a subscription creation (seconds); streams are long, so more are rarely needed idle.
  # --no-cpu-throttling: heartbeats, the channel pull and the instance heartbeat run
  # between requests' bytes, which a throttled CPU would starve.
  g run deploy "$STREAM_SERVICE" --region="$REGION" --source="$BUILD_DIR/stream" \
    --service-account="$STREAM_SA" --allow-unauthenticated \
    --concurrency=1000 --timeout="$RUN_TIMEOUT" --min-instances=1 --max-instances=20 \
    --no-cpu-throttling --cpu=1 --memory=1Gi --execution-environment=gen2 \
    --startup-probe="$STARTUP_PROBE" --liveness-probe="$LIVENESS_PROBE" \
    --set-env-vars="$(common_env),SSE_MAX_STREAM_SECONDS=$SSE_MAX_STREAM_SECONDS,DEMO_PAGE=false" \
    --set-secrets="JWT_SECRET=$SECRET_NAME:latest"
  serve_latest "$STREAM_SERVICE"
}

deploy_cleanup() {
  stage cleanup
  g functions deploy "$CLEANUP_FUNCTION" --gen2 --region="$REGION" --runtime=python311 \
    --source="$BUILD_DIR/cleanup" --entry-point=cleanup --trigger-http --no-allow-unauthenticated \
    --service-account="$CLEANUP_SA" --memory=512Mi --timeout=300s --max-instances=2 \
    --set-env-vars="$(common_env)"
  # Only the scheduler's identity may call cleanup (OIDC token checked by Cloud Run IAM).
  g functions add-invoker-policy-binding "$CLEANUP_FUNCTION" --region="$REGION" --member="serviceAccount:$SCHEDULER_SA"
  serve_latest "$CLEANUP_FUNCTION"

  local url
  url="$(gq functions describe "$CLEANUP_FUNCTION" --gen2 --region="$REGION" --format='value(serviceConfig.uri)' ||
    echo "https://CLEANUP-URL")"
  local verb=create
  gexists scheduler jobs describe "$SCHEDULER_JOB" --location="$REGION" && verb=update
  g scheduler jobs "$verb" http "$SCHEDULER_JOB" --location="$REGION" --schedule='*/5 * * * *' \
    --uri="$url?budget_seconds=50" --http-method=POST \
    --oidc-service-account-email="$SCHEDULER_SA" --oidc-token-audience="$url" \
    --attempt-deadline=320s
}

# --- monitoring ----------------------------------------------------------------------

deploy_monitoring() {
  local file name
  for file in "$ROOT"/ops/metrics/*.yaml; do
    name="$(basename "$file" .yaml)"
    if gexists logging metrics describe "$name"; then
      g logging metrics update "$name" --config-from-file="$file"
    else
      g logging metrics create "$name" --config-from-file="$file"
    fi
  done
  local channels=()
  [ -z "$ALERT_CHANNELS" ] || channels=(--notification-channels="$ALERT_CHANNELS")
  for file in "$ROOT"/ops/alerts/*.yaml; do
    local display existing
    display="$(sed -n 's/^displayName: *//p' "$file" | head -n1 | tr -d "\"'")"
    existing="$(gq alpha monitoring policies list --filter="displayName=\"$display\"" --format='value(name)' || true)"
    if [ -n "$existing" ]; then
      g alpha monitoring policies update "${existing%%$'\n'*}" --policy-from-file="$file" "${channels[@]}"
    else
      g alpha monitoring policies create --policy-from-file="$file" "${channels[@]}"
    fi
  done
  deploy_dashboard
}

deploy_dashboard() {  # keyed by display name, like the alert policies
  local display existing name etag body="$BUILD_DIR/dashboard.json"
  display="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["displayName"])' "$DASHBOARD_FILE")"
  existing="$(gq monitoring dashboards list --filter="displayName=\"$display\"" --format='value(name,etag)' || true)"
  if [ -z "$existing" ]; then
    g monitoring dashboards create --config-from-file="$DASHBOARD_FILE"
    return 0
  fi
  read -r name etag <<<"${existing%%$'\n'*}"
  # The update names the version it replaces (the etag just listed), as the Dashboards API expects.
  mkdir -p "$BUILD_DIR"
  python3 - "$DASHBOARD_FILE" "${etag:-}" >"$body" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
if sys.argv[2]:
    dashboard["etag"] = sys.argv[2]
json.dump(dashboard, sys.stdout)
PY
  g monitoring dashboards update "$name" --config-from-file="$body"
}

# --- rollback --------------------------------------------------------------------------

service_of() {  # service_of COMPONENT: its Cloud Run service (the functions are gen2)
  case "$1" in
    ingest) echo "$INGEST_FUNCTION" ;;
    stream) echo "$STREAM_SERVICE" ;;
    cleanup) echo "$CLEANUP_FUNCTION" ;;
  esac
}

rollback() {  # rollback COMPONENT: all traffic to the revision before the one serving now
  local service previous described revisions
  service="$(service_of "$1")"
  if [ "$DRY_RUN" = 1 ]; then
    gq run services describe "$service" --region="$REGION" --format=json || true
    gq run revisions list --service="$service" --region="$REGION" --format=json || true
    previous="PREVIOUS_REVISION"
  else
    described="$(gq run services describe "$service" --region="$REGION" --format=json)" || {
      echo "deploy.sh: cannot describe $service in $REGION" >&2
      exit 1
    }
    revisions="$(gq run revisions list --service="$service" --region="$REGION" --format=json)" || {
      echo "deploy.sh: cannot list the revisions of $service" >&2
      exit 1
    }
    previous="$(SERVICE_JSON="$described" python3 "$ROOT/ops/revisions.py" previous <<<"$revisions")" || exit 1
  fi
  log "$service: all traffic to $previous"
  g run services update-traffic "$service" --region="$REGION" --to-revisions="$previous=100"
}

# --- main --------------------------------------------------------------------------------

if [ "$STAGE_ONLY" = 1 ]; then
  for component in "${COMPONENTS[@]}"; do
    case "$component" in ingest|stream|cleanup) stage "$component" ;; esac
  done
  exit 0
fi

log "project $PROJECT, region $REGION, $ACTION: ${COMPONENTS[*]}$([ "$DRY_RUN" = 1 ] && echo ' (dry run)')"
for component in "${COMPONENTS[@]}"; do
  if [ "$ACTION" = rollback ]; then
    rollback "$component"
  else
    "deploy_$component"
  fi
done
log "done"
