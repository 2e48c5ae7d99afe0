{{/*
Names and labels shared by every template. The full name prefixes every resource, so
that two releases in one namespace do not collide.
*/}}

{{- define "rewind.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rewind.fullname" -}}
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

{{/*
The name of cluster-scoped resources (ClusterRole, ClusterRoleBinding): the full name
and the release's namespace, so that releases of the same name in two namespaces (the
demo's in rewind-system and a test's elsewhere, say) never claim the same object.
*/}}
{{- define "rewind.clusterScopedName" -}}
{{- printf "%s-%s" (include "rewind.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "rewind.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pod; they never change between upgrades. */}}
{{- define "rewind.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rewind.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of everything the chart makes, without the component. */}}
{{- define "rewind.commonLabels" -}}
helm.sh/chart: {{ include "rewind.chart" . }}
app.kubernetes.io/name: {{ include "rewind.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rewind
{{- end }}

{{/* Labels of the operator's resources. */}}
{{- define "rewind.labels" -}}
{{ include "rewind.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's service account. */}}
{{- define "rewind.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rewind.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rewind.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Namespaces that hold watched apps: the listed ones, or none (meaning all) when the list
is empty. Each one appears once, in the order given.
*/}}
{{- define "rewind.watchNamespaces" -}}
{{- uniq .Values.watchNamespaces | join "," }}
{{- end }}

{{/* The namespaces that get the engine service account: the release's and the watched ones. */}}
{{- define "rewind.engineNamespaces" -}}
{{- $ns := list .Release.Namespace }}
{{- range .Values.watchNamespaces }}{{- $ns = append $ns . }}{{- end }}
{{- uniq $ns | join "," }}
{{- end }}
