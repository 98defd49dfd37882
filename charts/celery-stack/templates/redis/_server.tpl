{{- /*
celery-stack.redis.serverOptions: the command-line options of every built-in data node — the single Redis and each
node of Sentinel mode alike: port, data directory, AOF and RDB persistence, noeviction and maxmemory
(celery-stack.redis.maxmemory). One definition, so both modes keep the same durability and memory settings.
*/ -}}
{{- define "celery-stack.redis.serverOptions" -}}
{{- $v := .Values.redis -}}
{{- $p := $v.persistence -}}
{{- $maxmemory := include "celery-stack.redis.maxmemory" . -}}
--port {{ $v.port }} --dir /data --appendonly {{ ternary "yes" "no" $p.aof.enabled }} --appendfsync {{ $p.aof.appendfsync }} {{ range $p.rdb.save }}--save {{ . }} {{ else }}--save '' {{ end }}--maxmemory-policy noeviction{{ with $maxmemory }} --maxmemory {{ . }}{{ end }}
{{- end -}}

{{- /* celery-stack.redis.pingProbe: succeeds while the data node on this pod answers PING (REDISCLI_AUTH). */ -}}
{{- define "celery-stack.redis.pingProbe" -}}
["sh", "-c", "{{ .Values.redis.cliCommand }} -h 127.0.0.1 -p {{ .Values.redis.port }} ping | grep -q PONG"]
{{- end -}}

{{- /* celery-stack.redis.volumeClaimTemplates: the data directory's claim of every built-in data node (or nothing). */ -}}
{{- define "celery-stack.redis.volumeClaimTemplates" -}}
{{- $v := .Values.redis -}}
{{- if $v.persistence.enabled }}
volumeClaimTemplates:
  - metadata:
      name: data
      labels:
        {{- include "celery-stack.selectorLabels" (dict "ctx" . "component" "redis") | nindent 8 }}
    spec:
      accessModes: [ReadWriteOnce]
      {{- with $v.persistence.storageClass }}
      storageClassName: {{ . }}
      {{- end }}
      resources:
        requests:
          storage: {{ $v.persistence.size }}
{{- end }}
{{- end -}}
