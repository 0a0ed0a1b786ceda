{{/*
Names, labels and the pieces every workload shares.
*/}}

{{/* The release's prefix: the release name, or "<release>-frlab" when it lacks "frlab". */}}
{{- define "frlab.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A component's object name: "<fullname>-<component>". Call with (list $ "gateway"). */}}
{{- define "frlab.name" -}}
{{- printf "%s-%s" (include "frlab.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of a component. app.kubernetes.io/name is the component's own name: for the
five services it is the service name, which chaos-controller selects pods by.
Call with (dict "root" $ "name" "gateway").
*/}}
{{- define "frlab.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* Recommended labels. Call with (dict "root" $ "name" "gateway" "component" "service"). */}}
{{- define "frlab.labels" -}}
{{ include "frlab.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: frlab
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The chart's own image (every frlab binary is in it). */}}
{{- define "frlab.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end -}}

{{/* Pod-level securityContext of the restricted Pod Security Standard. Call with the uid. */}}
{{- define "frlab.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container securityContext of the restricted Pod Security Standard. */}}
{{- define "frlab.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The Secret holding the admin token (key "token"). */}}
{{- define "frlab.adminSecret" -}}
{{- if .Values.adminToken.existingSecret -}}
{{- .Values.adminToken.existingSecret -}}
{{- else -}}
{{- include "frlab.name" (list . "admin-token") -}}
{{- end -}}
{{- end -}}

{{/* The env entry giving a container the admin token. */}}
{{- define "frlab.adminTokenEnv" -}}
- name: FRLAB_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "frlab.adminSecret" . }}
      key: token
{{- end -}}

{{/*
The profile's name: profileName, else "custom" for a profile given in `resilience`, else
"f-full" (the services' default). With an empty `resilience` it must be a built-in profile.
*/}}
{{- define "frlab.profileName" -}}
{{- if .Values.profileName -}}
{{- .Values.profileName -}}
{{- else if .Values.resilience -}}
custom
{{- else -}}
f-full
{{- end -}}
{{- end -}}

{{/* The profile file's name inside /etc/frlab/profile/. */}}
{{- define "frlab.profileFile" -}}
{{ include "frlab.profileName" . }}.yaml
{{- end -}}

{{/* FRLAB_PROFILE: the mounted file, or the built-in name when resilience is empty. */}}
{{- define "frlab.profileArg" -}}
{{- if .Values.resilience -}}
/etc/frlab/profile/{{ include "frlab.profileFile" . }}
{{- else -}}
{{- $name := include "frlab.profileName" . -}}
{{- $builtin := list "a-baseline" "b-naive-retries" "c-backoff-timeouts" "d-breakers" "e-bulkheads" "f-full" "g-adaptive" -}}
{{- if not (has $name $builtin) -}}
{{- fail (printf "profileName %q is not a built-in profile (%s) and resilience is empty: pass -f helm/profiles/<name>.yaml" $name (join ", " $builtin)) -}}
{{- end -}}
{{- $name -}}
{{- end -}}
{{- end -}}

{{/* gRPC URL of a service inside the cluster. Call with (list $ "orders"). */}}
{{- define "frlab.grpcUrl" -}}
{{- $root := index . 0 -}}
http://{{ include "frlab.name" . }}:{{ $root.Values.ports.grpc }}
{{- end -}}

{{/*
A file's text as the body of a block scalar, indented by n, with no trailing spaces on its
empty lines (yamllint checks the rendered output). Call with (list $text 4).
*/}}
{{- define "frlab.block" -}}
{{- regexReplaceAll "(?m)^[ \t]+$" (nindent (index . 1) (index . 0)) "" -}}
{{- end -}}
