{{/*
The services, in one place: the ports each listens on (fixed by the binary),
the services it calls over HTTP (the callee's trust list must name it, see
docs/identity.md), whether it keeps a database and talks to NATS, and the key
files of `blueprint keys generate` it needs. Every template reads this
instead of repeating it.
*/}}
{{- define "blueprint.components" -}}
gateway:
  port: 3001
  opsPort: 9101
  calls: [users, orders, notifications]
  keys: [access.pem, gateway.pem, trust.json]
users:
  port: 3002
  opsPort: 9102
  database: true
  keys: [users.pem, trust.json]
orders:
  port: 3003
  opsPort: 9103
  database: true
  nats: true
  keys: [orders.pem, trust.json, nats-orders.nk]
notifications:
  port: 3004
  opsPort: 9104
  database: true
  nats: true
  calls: [users]
  keys: [notifications.pem, trust.json, nats-notifications.nk]
{{- end }}

{{/*
The release's name for its objects: the release name, with the chart's name
unless it holds it. At most 48 characters, so that "<fullname>-notifications"
is still a valid Service name (63).
*/}}
{{- define "blueprint.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* A component's objects are named <fullname>-<component>. Input: dict "root" $ "name" component. */}}
{{- define "blueprint.componentName" -}}
{{- printf "%s-%s" (include "blueprint.fullname" .root) .name }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "blueprint.releaseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: blueprint
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of a component's objects. Input: dict "root" $ "name" component. */}}
{{- define "blueprint.labels" -}}
{{ include "blueprint.releaseLabels" .root }}
app.kubernetes.io/name: {{ .name }}
{{- end }}

{{/* What selects a component's pods. Input: dict "root" $ "name" component. */}}
{{- define "blueprint.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/* What selects every pod of the release. */}}
{{- define "blueprint.releaseSelectorLabels" -}}
app.kubernetes.io/part-of: blueprint
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The Secret holding the keys: the one given, or the one the chart makes from keys.files. */}}
{{- define "blueprint.keysSecret" -}}
{{- .Values.keys.existingSecret | default (printf "%s-keys" (include "blueprint.fullname" .)) }}
{{- end }}

{{/*
The settings read from Secrets, as a JSON list: each names its component and
variable, the key it has in the chart's credentials Secret, the value the
values give, and the values' block, which may name an existing Secret
instead (existingSecret, existingSecretKey).
*/}}
{{- define "blueprint.secretSettings" -}}
{{- $v := .Values -}}
{{- toJson (list
  (dict "component" "gateway" "env" "REDIS_URL" "key" "redis-url" "value" $v.gateway.redis.url "from" $v.gateway.redis)
  (dict "component" "users" "env" "USERS_DATABASE_URL" "key" "users-database-url" "value" $v.users.database.url "from" $v.users.database)
  (dict "component" "orders" "env" "ORDERS_DATABASE_URL" "key" "orders-database-url" "value" $v.orders.database.url "from" $v.orders.database)
  (dict "component" "notifications" "env" "NOTIFICATIONS_DATABASE_URL" "key" "notifications-database-url" "value" $v.notifications.database.url "from" $v.notifications.database)
  (dict "component" "notifications" "env" "NOTIFY_WEBHOOK_SECRET" "key" "webhook-secret" "value" $v.notifications.webhook.secret "from" $v.notifications.webhook)
) -}}
{{- end }}

{{/* "true" when a component has a PostgreSQL database configured, else empty. Input: dict "root" $ "name" component. */}}
{{- define "blueprint.hasDatabase" -}}
{{- with (get .root.Values .name).database }}
{{- if or .existingSecret .url }}true{{ end }}
{{- end }}
{{- end }}

{{/*
A component's non-secret settings, the data of its ConfigMap (variables of
the README's configuration table). Later entries win: the chart's, then
env and otel.env, then the component's env. Input: dict "root" $ "name"
component.
*/}}
{{- define "blueprint.config" -}}
{{- $root := .root }}
{{- $components := include "blueprint.components" $root | fromYaml }}
{{- $c := get $components .name }}
{{- $up := upper .name }}
{{- $env := dict
  "LOG_FORMAT" "json"
  "LOG_LEVEL" $root.Values.logLevel
  "BLUEPRINT_DATA_DIR" "/data"
  "BLUEPRINT_KEYS_DIR" "/etc/blueprint/keys"
  "SHUTDOWN_TIMEOUT" (printf "%ds" (int $root.Values.shutdown.timeoutSeconds))
  (printf "%s_ADDR" $up) (printf "0.0.0.0:%d" (int $c.port))
  (printf "%s_OPS_ADDR" $up) (printf "0.0.0.0:%d" (int $c.opsPort))
}}
{{- range $callee := $c.calls }}
{{- /* Headless Services: every address a name resolves to is a replica the caller spreads its calls over. */}}
{{- $_ := set $env (printf "%s_URL" (upper $callee)) (printf "http://%s:%d" (include "blueprint.componentName" (dict "root" $root "name" $callee)) (int (get $components $callee).port)) }}
{{- end }}
{{- if $c.nats }}
{{- $_ := set $env "NATS_URL" (required "nats.url: the NATS servers orders and notifications use" $root.Values.nats.url) }}
{{- $_ := set $env "NATS_STREAM_REPLICAS" (toString $root.Values.nats.streamReplicas) }}
{{- end }}
{{- with $root.Values.otel.endpoint }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" . }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_PROTOCOL" $root.Values.otel.protocol }}
{{- end }}
{{- if and (eq .name "notifications") $root.Values.notifications.webhook.url }}
{{- $_ := set $env "NOTIFY_WEBHOOK_URL" $root.Values.notifications.webhook.url }}
{{- end }}
{{- range $k, $v := merge (dict) (get $root.Values .name).env $root.Values.otel.env $root.Values.env }}
{{- $_ := set $env $k (toString $v) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/*
Render-time checks: a release that could not work fails here, with what to
set, instead of starting pods that crash.
*/}}
{{- define "blueprint.validate" -}}
{{- $components := include "blueprint.components" . | fromYaml }}
{{- if not .Values.keys.existingSecret }}
{{- if not .Values.keys.files }}
{{- fail "keys: set keys.existingSecret to a Secret made from the files of `blueprint keys generate --out DIR` (kubectl create secret generic blueprint-keys --from-file=DIR), or give each file with --set-file keys.files.<file>=DIR/<file>" }}
{{- end }}
{{- range $name, $c := $components }}
{{- range $c.keys }}
{{- $_ := required (printf "keys.files.%s: %s needs it; give it with --set-file keys.files.%s=DIR/%s, or use keys.existingSecret" . $name (replace "." "\\." .) .) (get $.Values.keys.files .) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name, $c := $components }}
{{- $values := get $.Values $name }}
{{- if and $c.database (not (include "blueprint.hasDatabase" (dict "root" $ "name" $name))) (or (gt (int $values.replicas) 1) $values.autoscaling.enabled) }}
{{- fail (printf "%s: more than one replica (%s.replicas=%d, autoscaling %t) needs a PostgreSQL database: set %s.database.existingSecret (e.g. the <cluster>-app Secret of CloudNativePG) or %s.database.url. Without one each pod keeps its own SQLite file in an emptyDir, lost with the pod: for trying one replica only" $name $name (int $values.replicas) $values.autoscaling.enabled $name $name) }}
{{- end }}
{{- end }}
{{- with .Values.notifications.webhook }}
{{- if and .url (not (or .secret .existingSecret)) }}
{{- fail "notifications.webhook: url needs the key that signs its requests: set notifications.webhook.secret or notifications.webhook.existingSecret" }}
{{- end }}
{{- end }}
{{- end }}
