{{- /*
celery-stack.redis.maxmemory: the built-in Redis' --maxmemory, or "" for no limit.
An explicit redis.maxmemory wins; else redis.maxmemoryPercentOfLimit percent of
redis.resources.limits.memory, a Kubernetes quantity (bytes; k M G T; Ki Mi Gi Ti; decimals
allowed), in bytes; else "" (no memory limit: Redis grows until the node runs out).
*/ -}}
{{- define "celery-stack.redis.maxmemory" -}}
{{- $v := .Values.redis -}}
{{- $raw := dig "limits" "memory" "" ($v.resources | default dict) -}}
{{- $limit := $raw | toString -}}
{{- if or (kindIs "float64" $raw) (kindIs "int64" $raw) (kindIs "int" $raw) -}}
{{- $limit = printf "%.0f" (float64 $raw) -}}{{- /* YAML numbers arrive as float64: 2.68435456e+08 */ -}}
{{- end -}}
{{- if $v.maxmemory -}}
{{- $v.maxmemory -}}
{{- else if $limit -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(k|M|G|T|Ki|Mi|Gi|Ti)?$" $limit) -}}
{{- fail (printf "redis.resources.limits.memory %q: maxmemory is derived from it, and only bytes, k/M/G/T and Ki/Mi/Gi/Ti quantities are understood; write it so, or set redis.maxmemory" $limit) -}}
{{- end -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $limit -}}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- $bytes := mulf (float64 $number) (get $units (trimPrefix $number $limit)) | floor | int64 -}}
{{- $max := div (mul $bytes $v.maxmemoryPercentOfLimit) 100 -}}
{{- if lt $max 1048576 -}}
{{- fail (printf "redis.maxmemoryPercentOfLimit %v%% of redis.resources.limits.memory %s is %d bytes, less than 1Mi: raise the limit or set redis.maxmemory" $v.maxmemoryPercentOfLimit $limit $max) -}}
{{- end -}}
{{- $max -}}
{{- end -}}
{{- end -}}
