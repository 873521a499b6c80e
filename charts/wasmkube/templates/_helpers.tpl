{{/* Common labels of every object. */}}
{{- define "wasmkube.labels" -}}
app.kubernetes.io/part-of: wasmkube
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of a component (operator, node-installer). */}}
{{- define "wasmkube.selector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* image reference: repository:tag, the tag defaulting to the appVersion. */}}
{{- define "wasmkube.image" -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{/* Names. */}}
{{- define "wasmkube.operator" -}}{{ .Release.Name }}-operator{{- end -}}
{{- define "wasmkube.installer" -}}{{ .Release.Name }}-node-installer{{- end -}}

{{/* The installer's host-facing arguments, shared by the DaemonSet and the pre-delete Job. */}}
{{- define "wasmkube.installerArgs" -}}
- --host-root=/host
- --bin-dir={{ .Values.nodeInstaller.binDir }}
- --restart={{ .Values.nodeInstaller.restart }}
{{- with .Values.nodeInstaller.restartUnit }}
- --restart-unit={{ . }}
{{- end }}
{{- with .Values.nodeInstaller.containerdConfig }}
- --containerd-config={{ . }}
{{- end }}
{{- end -}}
