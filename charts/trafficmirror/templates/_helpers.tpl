{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "trafficmirror.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object's name. */}}
{{- define "trafficmirror.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "trafficmirror.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "trafficmirror.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trafficmirror
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: call with (dict "root" $ "component" "operator"). */}}
{{- define "trafficmirror.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trafficmirror.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "trafficmirror.componentLabels" -}}
{{ include "trafficmirror.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "trafficmirror.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "trafficmirror.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "trafficmirror.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "trafficmirror.capture.serviceAccountName" -}}
{{- if .Values.capture.serviceAccount.create }}
{{- default (printf "%s-capture" (include "trafficmirror.fullname" .)) .Values.capture.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.capture.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the operator is scoped to namespaces. */}}
{{- define "trafficmirror.namespaced" -}}
{{- if or .Values.rbac.namespaced .Values.operator.watchNamespaces }}true{{ end }}
{{- end }}

{{/* The namespaces the operator watches, as a JSON list; empty list: cluster-wide. */}}
{{- define "trafficmirror.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}
{{- .Values.operator.watchNamespaces | uniq | toJson }}
{{- else if .Values.rbac.namespaced }}
{{- list .Release.Namespace | toJson }}
{{- else }}
{{- list | toJson }}
{{- end }}
{{- end }}

{{- define "trafficmirror.instanceSupportEnabled" -}}
{{- if or .Values.operator.instanceSupport.allow .Values.operator.instanceSupport.deny }}true{{ end }}
{{- end }}

{{/* The operator's rules on namespaced objects (a ClusterRole's when cluster-wide, else each Role's). */}}
{{- define "trafficmirror.operatorNamespacedRules" -}}
- apiGroups: [trafficmirror.io]
  resources: [mirrortargets, mirrorfilters, mirrorsessions]
  verbs: [list, watch, patch]
- apiGroups: [trafficmirror.io]
  resources: [mirrortargets/status, mirrorfilters/status, mirrorsessions/status]
  verbs: [patch]
- apiGroups: [trafficmirror.io]
  resources: [mirrorfilters, mirrorsessions]
  verbs: [get, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [{{ .peering }}]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [{{ .peering }}]
  resourceNames: [{{ .name | quote }}]
  verbs: [get, patch]
{{- if .ensure }}
{{- /* The peering init container creates the object when missing (create cannot be limited by name). */}}
- apiGroups: [kopf.dev]
  resources: [{{ .peering }}]
  verbs: [create]
{{- end }}
{{- end }}

{{- define "trafficmirror.peeringHook" -}}
helm.sh/hook: post-install,post-upgrade
helm.sh/hook-delete-policy: before-hook-creation
{{- end }}
