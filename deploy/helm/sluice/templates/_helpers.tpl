{{/* The chart's name, at most 63 characters. */}}
{{- define "sluice.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name, with the chart's unless it already has it. */}}
{{- define "sluice.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The configuration file's text, from values. */}}
{{- define "sluice.configYAML" -}}
{{- if not .Values.config.functions }}
{{- fail "config.functions: configure at least one function (see the Configuration file section of the Sluice README)" }}
{{- end }}
{{- toYaml .Values.config }}
{{- end }}

{{/* Where the configuration comes from: "configmap", "secret" (rendered by the chart) or "existing". */}}
{{- define "sluice.configSource" -}}
{{- if .Values.configSecret.existingSecret }}existing
{{- else if .Values.configSecret.create }}secret
{{- else }}
{{- if (.Values.config.callbacks | default dict).secrets }}
{{- fail "config.callbacks.secrets would go into a ConfigMap: set configSecret.create=true, or keep the configuration in a Secret of your own (configSecret.existingSecret)" }}
{{- end }}configmap
{{- end }}
{{- end }}

{{- define "sluice.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.gateway.terminationGracePeriodSeconds }}
{{- add .Values.gateway.shutdownDelaySeconds .Values.gateway.drainTimeoutSeconds 15 }}
{{- else }}
{{- .Values.gateway.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
The Secrets that hold the gateway's NATS credentials, by the folder each is
mounted in under /etc/sluice/nats: YAML, a map, empty without any.
*/}}
{{- define "sluice.natsSecrets" -}}
{{- with .Values.nats.credsSecret }}
creds: {{ . }}
{{- end }}
{{- with .Values.nats.nkeySecret }}
nkey: {{ . }}
{{- end }}
{{- with .Values.nats.tls.caSecret }}
ca: {{ . }}
{{- end }}
{{- with .Values.nats.tls.clientSecret }}
client: {{ . }}
{{- end }}
{{- end }}
