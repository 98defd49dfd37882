{{- /* Sentinel mode of the built-in Redis: names, host names and the checks of the values. */ -}}

{{- /* The StatefulSet of the data nodes (each pod: a data node and its sentinel). */ -}}
{{- define "celery-stack.redis.nodeName" -}}
{{- printf "%s-redis-node" (include "celery-stack.fullname" .) -}}
{{- end -}}

{{- /* The headless Service that gives every pod a stable DNS name, published before the pod is ready. */ -}}
{{- define "celery-stack.redis.headlessName" -}}
{{- printf "%s-redis-headless" (include "celery-stack.fullname" .) -}}
{{- end -}}

{{- /*
Every pod's stable host name, as a JSON list: `<pod>.<headless Service>.<namespace>.svc`. Without the cluster domain,
so it resolves with any clusterDomain and from any namespace (KEDA's operator); the sentinels announce these names
(announce-hostnames), so the app and KEDA connect to the names they get back from them.
*/ -}}
{{- define "celery-stack.redis.nodeHosts" -}}
{{- $hosts := list -}}
{{- $node := include "celery-stack.redis.nodeName" . -}}
{{- $headless := include "celery-stack.redis.headlessName" . -}}
{{- range $i := until (int .Values.redis.sentinel.replicas) -}}
{{- $hosts = append $hosts (printf "%s-%d.%s.%s.svc" $node $i $headless $.Release.Namespace) -}}
{{- end -}}
{{- $hosts | toJson -}}
{{- end -}}

{{- /*
The Redis values that JSON Schema cannot check (they compare two values): fail with the reason and the way out.
Included by celery-stack.redis, so every render checks them.
*/ -}}
{{- define "celery-stack.redis.validate" -}}
{{- $s := .Values.redis.sentinel -}}
{{- $x := .Values.externalRedis.sentinel -}}
{{- $wait := int .Values.broker.publishWait.replicas -}}
{{- if $x.enabled -}}
{{- if .Values.redis.enabled -}}
{{- fail "externalRedis.sentinel.enabled needs redis.enabled=false: it connects to sentinels of your own, and the built-in Redis would run unused. For a Sentinel group run by the chart, set redis.sentinel.enabled instead." -}}
{{- end -}}
{{- if not $x.hosts -}}
{{- fail "externalRedis.sentinel.enabled: list every sentinel in externalRedis.sentinel.hosts (host:port)" -}}
{{- end -}}
{{- if not $x.masterName -}}
{{- fail "externalRedis.sentinel.enabled: set externalRedis.sentinel.masterName, the master name the sentinels monitor" -}}
{{- end -}}
{{- if .Values.externalRedis.host -}}
{{- fail "externalRedis.host and externalRedis.sentinel.enabled: the app asks the sentinels for the primary; leave externalRedis.host empty (or turn externalRedis.sentinel off)" -}}
{{- end -}}
{{- if .Values.externalRedis.tls.enabled -}}
{{- fail "externalRedis.tls.enabled with externalRedis.sentinel.enabled: TLS towards sentinels is not supported (docs/reliability.md, Redis Sentinel: Limits)" -}}
{{- end -}}
{{- end -}}
{{- if $s.enabled -}}
{{- if not .Values.redis.enabled -}}
{{- fail "redis.sentinel.enabled runs Sentinel for the built-in Redis, and redis.enabled is false: set redis.enabled=true, or for sentinels of your own use externalRedis.sentinel (and redis.sentinel.enabled=false)" -}}
{{- end -}}
{{- $replicas := int $s.replicas -}}
{{- if gt (int $s.quorum) $replicas -}}
{{- fail (printf "redis.sentinel.quorum %d is more than redis.sentinel.replicas %d: that many sentinels could never agree the primary is down, so no failover would ever happen" (int $s.quorum) $replicas) -}}
{{- end -}}
{{- if gt (int $s.minReplicasToWrite) (sub $replicas 2 | int) -}}
{{- fail (printf "redis.sentinel.minReplicasToWrite %d with redis.sentinel.replicas %d (one primary, %d replicas): at most %d, so that a replica's restart (or a failover) does not stop every write; raise replicas or lower minReplicasToWrite" (int $s.minReplicasToWrite) $replicas (sub $replicas 1) (sub $replicas 2)) -}}
{{- end -}}
{{- if gt $wait (sub $replicas 2 | int) -}}
{{- fail (printf "broker.publishWait.replicas %d with redis.sentinel.replicas %d (one primary, %d replicas): at most %d, so that a replica's restart (or a failover) does not fail every publish" $wait $replicas (sub $replicas 1) (sub $replicas 2)) -}}
{{- end -}}
{{- if gt (len (include "celery-stack.redis.nodeName" .)) 52 -}}
{{- fail (printf "the StatefulSet name %q is longer than 52 characters (its pods' labels must stay within 63): shorten the release name or set fullnameOverride" (include "celery-stack.redis.nodeName" .)) -}}
{{- end -}}
{{- else if and .Values.redis.enabled $wait -}}
{{- fail "broker.publishWait.replicas needs replicas, and the single built-in Redis has none (every publish would fail): enable redis.sentinel, or set it to 0" -}}
{{- end -}}
{{- end -}}

{{- /*
Env of both containers of a Sentinel-mode pod: the two passwords (never in a file of the chart, never on a command
line) and the pod's stable name. (dict "ctx" $ "r" (celery-stack.redis) "headless" name)
*/ -}}
{{- define "celery-stack.redis.sentinelPodEnv" -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .r.passwordSecret }}
      key: {{ .r.passwordKey }}
- name: REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .r.sentinelPasswordSecret }}
      key: {{ .r.sentinelPasswordKey }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: REDIS_ANNOUNCE_HOST
  value: {{ printf "$(POD_NAME).%s.%s.svc" .headless .ctx.Release.Namespace | quote }}
{{- end -}}
