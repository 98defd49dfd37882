{{/* ============================== names and labels ============================== */}}

{{- define "celery-stack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "celery-stack.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "celery-stack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "web") */}}
{{- define "celery-stack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "celery-stack.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full labels of one component: (dict "ctx" $ "component" "web") */}}
{{- define "celery-stack.labels" -}}
helm.sh/chart: {{ include "celery-stack.chart" .ctx }}
{{ include "celery-stack.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: celery-stack
{{- end -}}

{{- define "celery-stack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "celery-stack.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "celery-stack.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "celery-stack.configMapName" -}}
{{- printf "%s-config" (include "celery-stack.fullname" .) -}}
{{- end -}}

{{- define "celery-stack.appSecretName" -}}
{{- default (printf "%s-app" (include "celery-stack.fullname" .)) .Values.app.existingSecret -}}
{{- end -}}

{{- define "celery-stack.webServiceName" -}}
{{- printf "%s-web" (include "celery-stack.fullname" .) -}}
{{- end -}}

{{/* ============================== generated-and-kept secrets ============================== */}}

{{/*
The one way the chart makes a secret value: reuse the value already stored in the release's Secret
(lookup; an upgrade never rotates a password a database already uses), else generate an alphanumeric
one (URL-safe: it is embedded in REDIS_URL / DATABASE_URL). Returns the base64 `data` value.
`helm template` cannot look up and so always generates. Args: (dict "ctx" $ "name" secretName "key" k "length" n),
or "fernet" true instead of "length": a Fernet key (the encrypted task payloads).
*/}}
{{- define "celery-stack.keptSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- $data := dig "data" dict ($existing | default dict) -}}
{{- if hasKey $data .key -}}
{{- index $data .key -}}
{{- else if .fernet -}}
{{- /* a Fernet key: 32 random bytes in URL-safe base64 (randBytes gives the standard alphabet) */ -}}
{{- randBytes 32 | replace "+" "-" | replace "/" "_" | b64enc -}}
{{- else -}}
{{- randAlphaNum (int .length) | b64enc -}}
{{- end -}}
{{- end -}}

{{/* ============================== Redis / database connection ============================== */}}

{{/*
The ONE source of the broker connection for the REDIS_URL env and for KEDA: built-in or external Redis, or
their Sentinel forms (built-in: redis.sentinel; external: externalRedis.sentinel), then `sentinel: true` and
`sentinels` lists host:port of every sentinel, reachable from any namespace (the app and KEDA's operator).
`host` serves the release's own pods (the short Service name resolves in their namespace); `address`
(host:port) serves clients in OTHER namespaces, such as the KEDA operator's redis scaler: for the
built-in Redis the Service's `<name>.<namespace>.svc` (no cluster domain, so it resolves with any
clusterDomain), an external host as given. Returns YAML; use with fromYaml.
*/}}
{{- define "celery-stack.redis" -}}
{{- $fullname := include "celery-stack.fullname" . -}}
{{- include "celery-stack.redis.validate" . -}}
{{- if and .Values.redis.enabled .Values.redis.sentinel.enabled -}}
{{- $s := .Values.redis.sentinel -}}
{{- $sentinels := list -}}
{{- range (include "celery-stack.redis.nodeHosts" . | fromJsonArray) }}
{{- $sentinels = append $sentinels (printf "%s:%d" . (int $s.port)) }}
{{- end }}
sentinel: true
sentinels: {{ $sentinels | toJson }}
masterName: {{ $s.masterName | quote }}
database: {{ .Values.redis.database | int }}
tls: false
certReqs: ""
auth: true
passwordSecret: {{ default (printf "%s-redis" $fullname) .Values.redis.auth.existingSecret | quote }}
passwordKey: {{ .Values.redis.auth.existingSecretPasswordKey | quote }}
sentinelAuth: true
sentinelPasswordSecret: {{ default (printf "%s-redis" $fullname) .Values.redis.auth.existingSecret | quote }}
sentinelPasswordKey: {{ $s.auth.existingSecretPasswordKey | quote }}
{{- else if .Values.externalRedis.sentinel.enabled -}}
{{- $s := .Values.externalRedis.sentinel }}
sentinel: true
sentinels: {{ $s.hosts | toJson }}
masterName: {{ $s.masterName | quote }}
database: {{ .Values.externalRedis.database | int }}
tls: false
certReqs: ""
auth: {{ not (empty .Values.externalRedis.existingSecret) }}
passwordSecret: {{ .Values.externalRedis.existingSecret | quote }}
passwordKey: {{ .Values.externalRedis.existingSecretPasswordKey | quote }}
sentinelAuth: {{ not (empty $s.existingSecret) }}
sentinelPasswordSecret: {{ $s.existingSecret | quote }}
sentinelPasswordKey: {{ $s.existingSecretPasswordKey | quote }}
{{- else if .Values.redis.enabled -}}
sentinel: false
host: {{ printf "%s-redis" $fullname | quote }}
port: {{ .Values.redis.port | int }}
address: {{ printf "%s-redis.%s.svc:%d" $fullname .Release.Namespace (int .Values.redis.port) | quote }}
database: {{ .Values.redis.database | int }}
tls: false
certReqs: ""
auth: true
passwordSecret: {{ default (printf "%s-redis" $fullname) .Values.redis.auth.existingSecret | quote }}
passwordKey: {{ .Values.redis.auth.existingSecretPasswordKey | quote }}
{{- else -}}
{{- if not .Values.externalRedis.host -}}
{{- fail "redis.enabled is false: set externalRedis.host (and externalRedis.existingSecret for AUTH)" -}}
{{- end }}
sentinel: false
host: {{ .Values.externalRedis.host | quote }}
port: {{ .Values.externalRedis.port | int }}
address: {{ printf "%s:%d" .Values.externalRedis.host (int .Values.externalRedis.port) | quote }}
database: {{ .Values.externalRedis.database | int }}
tls: {{ .Values.externalRedis.tls.enabled }}
certReqs: {{ .Values.externalRedis.tls.certReqs | quote }}
auth: {{ not (empty .Values.externalRedis.existingSecret) }}
passwordSecret: {{ .Values.externalRedis.existingSecret | quote }}
passwordKey: {{ .Values.externalRedis.existingSecretPasswordKey | quote }}
{{- end }}
keyPrefix: {{ .Values.broker.keyPrefix | quote }}
{{- end -}}

{{/*
Connection env of every application container. Kubernetes dependent env var expansion builds the URLs
from the password Secrets, so no password is ever rendered into the manifest or the ConfigMap.
*/}}
{{- define "celery-stack.connectionEnv" -}}
{{- $r := include "celery-stack.redis" . | fromYaml -}}
{{- $scheme := ternary "rediss" "redis" $r.tls -}}
{{- $query := ternary (printf "?ssl_cert_reqs=%s" $r.certReqs) "" $r.tls -}}
{{- if $r.sentinel }}
{{- /* kombu's form: one sentinel:// part per sentinel, each with the DATA nodes' password and database */}}
{{- $parts := list }}
{{- range $r.sentinels }}
{{- $parts = append $parts (printf "sentinel://%s%s/%d" (ternary ":$(REDIS_PASSWORD)@" "" $r.auth) . (int $r.database)) }}
{{- end }}
{{- if $r.auth }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.passwordSecret }}
      key: {{ $r.passwordKey }}
{{- end }}
- name: REDIS_URL
  value: {{ join ";" $parts | quote }}
- name: REDIS_SENTINEL_MASTER
  value: {{ $r.masterName | quote }}
{{- if $r.sentinelAuth }}
- name: REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.sentinelPasswordSecret }}
      key: {{ $r.sentinelPasswordKey }}
{{- end }}
{{- else if $r.auth }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.passwordSecret }}
      key: {{ $r.passwordKey }}
- name: REDIS_URL
  value: {{ printf "%s://:$(REDIS_PASSWORD)@%s:%d/%d%s" $scheme $r.host (int $r.port) (int $r.database) $query | quote }}
{{- else }}
- name: REDIS_URL
  value: {{ printf "%s://%s:%d/%d%s" $scheme $r.host (int $r.port) (int $r.database) $query | quote }}
{{- end }}
{{- $fullname := include "celery-stack.fullname" . -}}
{{- if .Values.postgresql.enabled }}
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-postgresql" $fullname) .Values.postgresql.auth.existingSecret }}
      key: {{ .Values.postgresql.auth.existingSecretPasswordKey }}
- name: DATABASE_URL
  value: {{ printf "postgres://%s:$(DATABASE_PASSWORD)@%s-postgresql:%d/%s" .Values.postgresql.username $fullname (int .Values.postgresql.port) .Values.postgresql.database | quote }}
{{- else if .Values.externalDatabase.existingSecret }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalDatabase.existingSecret }}
      key: {{ .Values.externalDatabase.existingSecretUrlKey }}
{{- else }}
{{- if not (and .Values.externalDatabase.host .Values.externalDatabase.passwordSecret) -}}
{{- fail "postgresql.enabled is false: set externalDatabase.existingSecret (a URL) or externalDatabase.host and externalDatabase.passwordSecret" -}}
{{- end }}
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalDatabase.passwordSecret }}
      key: {{ .Values.externalDatabase.passwordSecretKey }}
- name: DATABASE_URL
  value: {{ printf "postgres://%s:$(DATABASE_PASSWORD)@%s:%d/%s%s" .Values.externalDatabase.username .Values.externalDatabase.host (int .Values.externalDatabase.port) .Values.externalDatabase.database (ternary (printf "?sslmode=%s" .Values.externalDatabase.sslmode) "" (not (empty .Values.externalDatabase.sslmode))) | quote }}
{{- end }}
{{- end -}}

{{/* ============================== pods ============================== */}}

{{/*
checksum/secret of a pod template: a sha256 of what DEFINES a Secret its pods read, never of a generated
value. keptSecretValue generates a value whenever lookup finds no stored Secret (a first install,
`helm template`, GitOps), so rendering the Secret template once more for the annotation hashed a second,
different random value: the install's checksum never matched the first upgrade's (which looks up the
stored value) and that upgrade restarted every pod, Redis and PostgreSQL included, with nothing changed
(bitnami/charts#5977; Airflow's random keys). As Bitnami's charts do, only the Secret's `data` is hashed,
not its metadata (labels carry the chart version); of that data only the KEYS, because every value the
chart writes is generated once and then kept for the life of the Secret (lookup), so a value never
changes while its Secret exists. What the user gives goes in whole: `given`, the values that name the
existing Secret (and key) read instead. Args: (dict "ctx" $ "template" "redis/redis-secret.yaml" "given" x)
*/}}
{{- define "celery-stack.secretChecksum" -}}
{{- $secret := include (print .ctx.Template.BasePath "/" .template) .ctx | fromYaml -}}
{{- $generated := dict "name" (dig "metadata" "name" "" $secret) "keys" (keys (dig "data" dict $secret) | sortAlpha) -}}
{{- dict "generated" $generated "given" .given | toJson | sha256sum -}}
{{- end -}}

{{/*
Pod annotations: checksums roll every pod when the shared ConfigMap's data or the definition of the
shared Secret changes (celery-stack.secretChecksum). (dict "ctx" $ "extra" map)
*/}}
{{- define "celery-stack.podAnnotations" -}}
checksum/config: {{ include (print .ctx.Template.BasePath "/config/configmap.yaml") .ctx | fromYaml | dig "data" dict | toJson | sha256sum }}
checksum/secret: {{ include "celery-stack.secretChecksum" (dict "ctx" .ctx "template" "config/secret.yaml" "given" (pick .ctx.Values.app "existingSecret")) }}
{{- with (merge (dict) (.extra | default dict) .ctx.Values.global.podAnnotations) }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod labels: selector labels plus global and component extras. (dict "ctx" $ "component" c "extra" map) */}}
{{- define "celery-stack.podLabels" -}}
{{ include "celery-stack.labels" . }}
{{- with (merge (dict) (.extra | default dict) .ctx.Values.global.podLabels) }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Scheduling of a pod: the component's own values, else the global ones. (dict "ctx" $ "values" componentValues) */}}
{{- define "celery-stack.scheduling" -}}
{{- $g := .ctx.Values.global -}}
{{- with (default $g.nodeSelector .values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $g.tolerations .values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $g.affinity .values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $g.topologySpreadConstraints .values.topologySpreadConstraints) }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod-level spec shared by every application pod. */}}
{{- define "celery-stack.appPodSpec" -}}
serviceAccountName: {{ include "celery-stack.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Writable directories of the read-only-root application containers. */}}
{{- define "celery-stack.appVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
- name: data
  emptyDir:
    sizeLimit: {{ .Values.app.dataDirSizeLimit }}
- name: prometheus
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "celery-stack.appVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /data
- name: prometheus
  mountPath: /prometheus
{{- end -}}

{{/* Image, env and security of an application container (the caller adds name/command/ports/probes). */}}
{{- define "celery-stack.appContainerCommon" -}}
image: {{ include "celery-stack.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
envFrom:
  - configMapRef:
      name: {{ include "celery-stack.configMapName" . }}
  - secretRef:
      name: {{ include "celery-stack.appSecretName" . }}
{{- with .Values.app.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  {{- include "celery-stack.appVolumeMounts" . | nindent 2 }}
{{- end -}}

{{/* Init container: wait until the migration Job has applied every migration. */}}
{{- define "celery-stack.waitForMigrations" -}}
- name: wait-for-migrations
  {{- include "celery-stack.appContainerCommon" . | nindent 2 }}
  args: ["python", "manage.py", "wait_for_migrations", "--timeout", {{ .Values.migrations.waitTimeoutSeconds | quote }}]
  env:
    {{- include "celery-stack.connectionEnv" . | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
{{- end -}}

{{/* ============================== workers and CRDs ============================== */}}

{{/* Worker pools merged over workerDefaults, as YAML (fromYaml): pool name -> settings. */}}
{{- define "celery-stack.workerPools" -}}
{{- $pools := dict -}}
{{- range $name, $spec := .Values.workers -}}
{{- if $spec -}}
{{- $_ := set $pools $name (mergeOverwrite (deepCopy $.Values.workerDefaults) (deepCopy $spec)) -}}
{{- end -}}
{{- end -}}
{{- toYaml $pools -}}
{{- end -}}

{{/*
Fail with a clear message when an optional CRD object is enabled but its API is not served, unless
crds.skipCapabilitiesCheck (helm template / GitOps). Args: (list $ "keda.sh/v1alpha1" "what needs it")
*/}}
{{- define "celery-stack.requireApi" -}}
{{- $ctx := index . 0 -}}
{{- $api := index . 1 -}}
{{- if not (or $ctx.Values.crds.skipCapabilitiesCheck ($ctx.Capabilities.APIVersions.Has $api)) -}}
{{- fail (printf "%s needs the API %s, which the cluster does not serve: install its CRDs first, or set crds.skipCapabilitiesCheck=true to render anyway (helm template / GitOps)." (index . 2) $api) -}}
{{- end -}}
{{- end -}}

{{/* Exec probe of beat: succeeds while a `celery ... beat` process runs in the container (no broker call). */}}
{{- define "celery-stack.beatRunningProbe" -}}
- python
- -c
- |
  import os, sys
  me = str(os.getpid())
  def cmdline(pid):
      with open(f"/proc/{pid}/cmdline", "rb") as f:
          return f.read().split(b"\0")
  sys.exit(0 if any(b"beat" in cmdline(p) for p in os.listdir("/proc") if p.isdigit() and p != me) else 1)
{{- end -}}

{{/* A NetworkPolicy peer: this release's pods of the given roles. (list $ (list "web" "worker")) */}}
{{- define "celery-stack.rolesPeer" -}}
{{- $ctx := index . 0 -}}
podSelector:
  matchLabels:
    app.kubernetes.io/name: {{ include "celery-stack.name" $ctx }}
    app.kubernetes.io/instance: {{ $ctx.Release.Name }}
  matchExpressions:
    - key: app.kubernetes.io/component
      operator: In
      values: {{ index . 1 | toJson }}
{{- end -}}
