{{/*
Names. The StatefulSet name is kept to 52 characters: its pods carry a
controller-revision-hash label made of the name plus 11 characters, and labels stop at 63.
*/}}
{{- define "dwasm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "dwasm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The headless Service that gives each pod a stable DNS name for its peers. */}}
{{- define "dwasm.headlessName" -}}
{{- printf "%s-peers" (include "dwasm.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dwasm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dwasm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dwasm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dwasm.labels" -}}
helm.sh/chart: {{ include "dwasm.chart" . }}
{{ include "dwasm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "dwasm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dwasm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dwasm.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Cluster mode: etcd is configured (endpoints or an existing Secret). */}}
{{- define "dwasm.clusterMode" -}}
{{- if or .Values.etcd.endpoints .Values.etcd.existingSecret }}true{{ end }}
{{- end }}

{{/* The chart's own Secret, holding every value given inline. */}}
{{- define "dwasm.secretName" -}}
{{- printf "%s-secrets" (include "dwasm.fullname" .) }}
{{- end }}

{{/* Which Secret and key each sensitive variable comes from: "name key". */}}
{{- define "dwasm.databaseSecretRef" -}}
{{- if .Values.database.existingSecret -}}
{{ .Values.database.existingSecret }} {{ .Values.database.existingSecretKey }}
{{- else if .Values.database.url -}}
{{ include "dwasm.secretName" . }} database-url
{{- else -}}
{{ include "dwasm.fullname" . }}-database {{ .Values.database.existingSecretKey }}
{{- end }}
{{- end }}

{{- define "dwasm.etcdSecretRef" -}}
{{- if .Values.etcd.existingSecret -}}
{{ .Values.etcd.existingSecret }} {{ .Values.etcd.existingSecretKey }}
{{- else -}}
{{ include "dwasm.secretName" . }} etcd-endpoints
{{- end }}
{{- end }}

{{- define "dwasm.clusterSecretRef" -}}
{{- if .Values.cluster.existingSecret -}}
{{ .Values.cluster.existingSecret }} {{ .Values.cluster.existingSecretKey }}
{{- else -}}
{{ include "dwasm.secretName" . }} cluster-secret
{{- end }}
{{- end }}

{{- define "dwasm.apiTokensSecretRef" -}}
{{- if .Values.apiTokens.existingSecret -}}
{{ .Values.apiTokens.existingSecret }} {{ .Values.apiTokens.existingSecretKey }}
{{- else -}}
{{ include "dwasm.secretName" . }} api-tokens
{{- end }}
{{- end }}

{{/*
Checks that stop a release which could not work, with a message that says what to set.
Included by the StatefulSet, so `helm template`/`install` fail before anything is applied.
*/}}
{{- define "dwasm.validate" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if lt $replicas 1 }}
{{- fail "dwasm: replicaCount must be at least 1" }}
{{- end }}
{{- if and (gt $replicas 1) (not (include "dwasm.clusterMode" .)) }}
{{- fail (printf "dwasm: replicaCount is %d but etcd is not configured; more than one node needs a shared etcd (set etcd.endpoints or etcd.existingSecret), otherwise every node would claim every shard" $replicas) }}
{{- end }}
{{- if and .Values.database.url .Values.database.existingSecret }}
{{- fail "dwasm: set database.url or database.existingSecret, not both" }}
{{- end }}
{{- if and .Values.etcd.endpoints .Values.etcd.existingSecret }}
{{- fail "dwasm: set etcd.endpoints or etcd.existingSecret, not both" }}
{{- end }}
{{- range .Values.etcd.endpoints }}
{{- if hasPrefix "https://" (toString .) }}
{{- fail (printf "dwasm: etcd endpoint %q: only http:// or host:port endpoints are supported (no TLS yet)" (toString .)) }}
{{- end }}
{{- end }}
{{- if and (include "dwasm.clusterMode" .) (not (or .Values.cluster.secret .Values.cluster.existingSecret)) }}
{{- fail "dwasm: cluster mode (etcd configured) needs cluster.secret or cluster.existingSecret: the shared DWASM_CLUSTER_SECRET of all nodes (the chart does not generate one: it would change on every upgrade)" }}
{{- end }}
{{- if and .Values.cluster.secret .Values.cluster.existingSecret }}
{{- fail "dwasm: set cluster.secret or cluster.existingSecret, not both" }}
{{- end }}
{{- if and .Values.apiTokens.tokens .Values.apiTokens.existingSecret }}
{{- fail "dwasm: set apiTokens.tokens or apiTokens.existingSecret, not both" }}
{{- end }}
{{- $managed := list "DWASM_NODE_ID" "DWASM_ADVERTISE_URL" "DWASM_HOST" "DWASM_PORT" "DWASM_DATABASE_URL" "DWASM_ETCD" "DWASM_ETCD_PREFIX" "DWASM_CLUSTER_SECRET" "DWASM_SHARDS" "DWASM_SHUTDOWN_GRACE" "DWASM_API_TOKENS" "DWASM_DATA_DIR" }}
{{- range $name, $_ := .Values.env }}
{{- if has $name $managed }}
{{- fail (printf "dwasm: env.%s is set by the chart; use its own value instead (see README.md)" $name) }}
{{- end }}
{{- end }}
{{- if lt (float64 .Values.shutdownGrace) 0.0 }}
{{- fail "dwasm: shutdownGrace must be at least 0" }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: preStop sleep + drain + the HTTP server's own shutdown. */}}
{{- define "dwasm.terminationGracePeriod" -}}
{{- add (int .Values.preStopSleepSeconds) (int (ceil (float64 .Values.shutdownGrace))) (int .Values.terminationExtraSeconds) }}
{{- end }}
