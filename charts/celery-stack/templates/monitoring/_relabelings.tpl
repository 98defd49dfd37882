{{- /*
The one `job` label of every series the ServiceMonitors/PodMonitors scrape: web, workers and the exporter
share it (monitoring.job, else the release's fullname), so the community celery-mixin, whose alerts select
job=~".*celery.*" and whose dashboards read worker and queue series under one $job, works unchanged.
Without it the Prometheus Operator names the job after each Service (PodMonitor: namespace/name).
*/ -}}
{{- define "celery-stack.monitoringJob" -}}
{{- .Values.monitoring.job | default (include "celery-stack.fullname" .) -}}
{{- end -}}

{{- define "celery-stack.monitoringRelabelings" -}}
relabelings:
  - action: replace
    targetLabel: job
    replacement: {{ include "celery-stack.monitoringJob" . | quote }}
{{- end -}}
