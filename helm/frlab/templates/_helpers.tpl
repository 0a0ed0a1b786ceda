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

{{/*
A service's ports as JSON ({"grpc":..,"http":..,"admin":..}): its own from
hostNetwork.ports with hostNetwork (the pods share the node's ports), else the common ones.
Call with (list $ "orders"); read with `include ... | fromJson`.
*/}}
{{- define "frlab.ports" -}}
{{- $root := index . 0 -}}
{{- if $root.Values.hostNetwork.enabled -}}
{{- toJson (index $root.Values.hostNetwork.ports (index . 1)) -}}
{{- else -}}
{{- toJson $root.Values.ports -}}
{{- end -}}
{{- end -}}

{{/* The address the lab's pods listen on: the pod's own addresses, or only 127.0.0.1 on the node's network. */}}
{{- define "frlab.listenHost" -}}
{{- if .Values.hostNetwork.enabled -}}127.0.0.1{{- else -}}0.0.0.0{{- end -}}
{{- end -}}

{{/*
gRPC URL of a service: its Service, or 127.0.0.1 and its own port with hostNetwork (no
cluster DNS, no kube-proxy there). Call with (list $ "orders").
*/}}
{{- define "frlab.grpcUrl" -}}
{{- $root := index . 0 -}}
{{- $ports := include "frlab.ports" . | fromJson -}}
{{- if $root.Values.hostNetwork.enabled -}}
http://127.0.0.1:{{ int $ports.grpc }}
{{- else -}}
http://{{ include "frlab.name" . }}:{{ int $ports.grpc }}
{{- end -}}
{{- end -}}

{{/* `hostNetwork: true` in a pod spec when hostNetwork.enabled (else nothing). */}}
{{- define "frlab.podNetwork" -}}
{{- if .Values.hostNetwork.enabled -}}
hostNetwork: true
{{- end -}}
{{- end -}}

{{/*
What hostNetwork needs, checked once: one pod per service (a second would find its ports
taken), distinct ports, and none of the bundled third-party servers (their fixed ports would
be the node's own, e.g. the node's Postgres on 5432).
*/}}
{{- define "frlab.checkHostNetwork" -}}
{{- if .Values.hostNetwork.enabled -}}
{{- range $name, $svc := .Values.services -}}
{{- if gt (int $svc.replicas) 1 -}}
{{- fail (printf "hostNetwork.enabled: services.%s.replicas is %v, but each service runs one pod on the node's network (set it to 1)" $name $svc.replicas) -}}
{{- end -}}
{{- end -}}
{{- range $part := list "postgres" "redis" "prometheus" "grafana" "jaeger" -}}
{{- if (index $.Values $part).enabled -}}
{{- fail (printf "hostNetwork.enabled: %s.enabled must be false (its pod would listen on the node's own ports; k8s/local/values.yaml turns it off)" $part) -}}
{{- end -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $name, $ports := .Values.hostNetwork.ports -}}
{{- range $kind, $port := $ports -}}
{{- $key := toString (int $port) -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "hostNetwork.ports.%s.%s: port %s is also %s" $name $kind $key (get $seen $key)) -}}
{{- end -}}
{{- $_ := set $seen $key (printf "hostNetwork.ports.%s.%s" $name $kind) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The env entries pointing a pod's API client (kube-rs in-cluster config) at
hostNetwork.apiServer: without kube-proxy the `kubernetes` Service's ClusterIP, which the
kubelet puts in KUBERNETES_SERVICE_HOST, routes nowhere. Nothing otherwise.
*/}}
{{- define "frlab.apiServerEnv" -}}
{{- $api := .Values.hostNetwork.apiServer -}}
{{- if and .Values.hostNetwork.enabled $api.host -}}
- name: KUBERNETES_SERVICE_HOST
  value: {{ $api.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ $api.port | quote }}
{{- end -}}
{{- end -}}

{{/*
A gRPC health probe's action on `port`: native (`grpc:`, on by default from Kubernetes
1.24, GA in 1.27), else `exec` of the image's own health-probe (the image has no shell),
which asks 127.0.0.1:port inside the pod. Call with (list $ port).
*/}}
{{- define "frlab.grpcProbe" -}}
{{- $root := index . 0 -}}
{{- $port := int (index . 1) -}}
{{- if semverCompare ">=1.24.0-0" $root.Capabilities.KubeVersion.Version -}}
grpc:
  port: {{ $port }}
{{- else -}}
exec:
  command: ["/usr/local/bin/health-probe", "{{ $port }}"]
{{- end -}}
{{- end -}}

{{/*
The PodDisruptionBudget API: policy/v1 where the cluster serves it (1.21+), else
policy/v1beta1 (1.20). Both tests are needed: a real server reports its APIs, while
`helm template --kube-version` reports a fixed list that always has policy/v1.
*/}}
{{- define "frlab.pdbApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21.0-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{/*
A file's text as the body of a block scalar, indented by n, with no trailing spaces on its
empty lines (yamllint checks the rendered output). Call with (list $text 4).
*/}}
{{- define "frlab.block" -}}
{{- regexReplaceAll "(?m)^[ \t]+$" (nindent (index . 1) (index . 0)) "" -}}
{{- end -}}
