{{/* Names. Component names are FULLNAME-COMPONENT, so FULLNAME is kept short enough. */}}
{{- define "privproc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "privproc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* FULLNAME-COMPONENT; call with (list $ "component"). */}}
{{- define "privproc.component" -}}
{{- printf "%s-%s" (include "privproc.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secrets' prefix (`privproc cluster secrets --name`). */}}
{{- define "privproc.secretPrefix" -}}
{{- default (include "privproc.fullname" .) .Values.secrets.prefix }}
{{- end }}

{{/* Labels; call with (list $ "component"). */}}
{{- define "privproc.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{ include "privproc.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: privproc
{{- end }}

{{- define "privproc.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "privproc.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Every pod of the release (for the default-deny policy). */}}
{{- define "privproc.releaseLabels" -}}
app.kubernetes.io/name: {{ include "privproc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The privproc image reference. */}}
{{- define "privproc.image" -}}
{{- if and .Values.image.pinDigest .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* In-cluster host name of a component's Service; call with (list $ "component"). */}}
{{- define "privproc.host" -}}
{{- $root := index . 0 -}}
{{- printf "%s.%s.svc.%s" (include "privproc.component" .) $root.Release.Namespace $root.Values.clusterDomain }}
{{- end }}

{{- define "privproc.grpcOf" -}}
{{- printf "%s:%v" (include "privproc.host" .) (index . 0).Values.ports.grpc }}
{{- end }}

{{- define "privproc.httpOf" -}}
{{- printf "http://%s:%v" (include "privproc.host" .) (index . 0).Values.ports.http }}
{{- end }}

{{/* Peers' addresses: the in-release Service, or `external.*` when the peer is off. */}}
{{- define "privproc.ledgerTarget" -}}
{{- if .Values.ledger.enabled }}{{ include "privproc.grpcOf" (list . "ledger") }}{{ else }}{{ .Values.external.ledgerTarget }}{{ end }}
{{- end }}

{{- define "privproc.ledgerTilesUrl" -}}
{{- if .Values.ledger.enabled }}{{ include "privproc.httpOf" (list . "ledger") }}{{ else }}{{ .Values.external.ledgerTilesUrl }}{{ end }}
{{- end }}

{{- define "privproc.witnessUrl" -}}
{{- if .Values.witness.enabled }}{{ include "privproc.httpOf" (list . "witness") }}{{ else }}{{ .Values.external.witnessUrl }}{{ end }}
{{- end }}

{{- define "privproc.cdnTarget" -}}
{{- if .Values.cdn.enabled }}{{ include "privproc.grpcOf" (list . "cdn") }}{{ else }}{{ .Values.external.cdnTarget }}{{ end }}
{{- end }}

{{- define "privproc.cdnUrl" -}}
{{- if .Values.cdn.enabled }}{{ include "privproc.httpOf" (list . "cdn") }}{{ else }}{{ .Values.external.cdnUrl | trimSuffix "/" }}{{ end }}
{{- end }}

{{- define "privproc.cdnProofsUrl" -}}
{{- if .Values.cdn.enabled }}{{ include "privproc.httpOf" (list . "cdn") }}/proofs/{{ else }}{{ .Values.external.cdnProofsUrl }}{{ end }}
{{- end }}

{{- define "privproc.verifierTarget" -}}
{{- if .Values.verifier.enabled }}{{ include "privproc.grpcOf" (list . "verifier") }}{{ else }}{{ .Values.external.verifierTarget }}{{ end }}
{{- end }}

{{- define "privproc.acsTarget" -}}
{{- if .Values.acs.enabled }}{{ include "privproc.grpcOf" (list . "acs") }}{{ else }}{{ .Values.external.acsTarget }}{{ end }}
{{- end }}

{{- define "privproc.gatewayUrl" -}}
{{- if .Values.gateway.enabled }}{{ include "privproc.httpOf" (list . "gateway") }}/.well-known/ohttp-gateway{{ else }}{{ .Values.relay.gatewayUrl }}{{ end }}
{{- end }}

{{- define "privproc.relayUrl" -}}
{{- if .Values.relay.enabled }}{{ include "privproc.httpOf" (list . "relay") }}/ohttp-relay{{ else }}{{ .Values.external.relayUrl }}{{ end }}
{{- end }}

{{/* The Redis URL given to gateways as a flag ("" when it comes from a Secret, or there is none). */}}
{{- define "privproc.redisUrl" -}}
{{- if .Values.redis.existingSecret }}
{{- else if .Values.redis.url }}{{ .Values.redis.url }}
{{- else if .Values.redis.enabled }}{{ printf "redis://%s:6379/0" (include "privproc.host" (list . "redis")) }}
{{- end }}
{{- end }}

{{- define "privproc.hasRedis" -}}
{{- if or .Values.redis.enabled .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{/* A value as its environment variable's text (settings: a list is a JSON array of strings). */}}
{{- define "privproc.envScalar" -}}
{{- if kindIs "bool" . }}{{ ternary "true" "false" . }}
{{- else if and (kindIs "float64" .) (eq (. | int64 | float64) .) }}{{ . | int64 }}
{{- else }}{{ toString . }}
{{- end }}
{{- end }}

{{/* A component's `config:` map as PRIVPROC_<SERVICE>_<OPTION> variables; call with
     (dict "prefix" "PRIVPROC_RELAY" "config" .Values.relay.config). Null values are left out. */}}
{{- define "privproc.configEnv" -}}
{{- $prefix := .prefix }}
{{- range $key, $value := .config }}
{{- $name := printf "%s_%s" $prefix ($key | upper | replace "-" "_") }}
{{- if kindIs "map" $value }}
{{ include "privproc.configEnv" (dict "prefix" $name "config" $value) }}
{{- else if kindIs "slice" $value }}
{{- $items := list }}
{{- range $value }}{{ $items = append $items (include "privproc.envScalar" .) }}{{ end }}
- name: {{ $name }}
  value: {{ toJson $items | quote }}
{{- else if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ include "privproc.envScalar" $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod security context: the restricted Pod Security profile. */}}
{{- define "privproc.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsUser }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context: read-only root, no privilege, every capability dropped. */}}
{{- define "privproc.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsUser }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Exec probes: `privproc health 127.0.0.1:PORT` (gRPC health SERVING). */}}
{{- define "privproc.probes" -}}
{{- $root := index . 0 -}}
{{- $port := $root.Values.ports.grpc -}}
{{- $probes := $root.Values.probes -}}
{{- if semverCompare ">=1.24-0" $root.Capabilities.KubeVersion.Version }}
readinessProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: {{ $probes.periodSeconds }}
  timeoutSeconds: {{ $probes.timeoutSeconds }}
livenessProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: {{ $probes.livenessPeriodSeconds }}
  timeoutSeconds: {{ $probes.timeoutSeconds }}
  failureThreshold: {{ $probes.failureThreshold }}
{{- else }}
{{- /* Before 1.24 there is no gRPC probe: readiness runs `privproc health` (a Python start each
time, hence its own period); liveness only asks that the port accepts connections. */}}
readinessProbe:
  exec:
    command: {{ toJson (list "/opt/privproc/bin/privproc" "health" (printf "127.0.0.1:%v" $port)) }}
  periodSeconds: {{ $probes.execPeriodSeconds }}
  timeoutSeconds: {{ $probes.timeoutSeconds }}
livenessProbe:
  tcpSocket:
    port: {{ $port }}
  periodSeconds: {{ $probes.livenessPeriodSeconds }}
  timeoutSeconds: {{ $probes.timeoutSeconds }}
  failureThreshold: {{ $probes.failureThreshold }}
{{- end }}
startupProbe:
  tcpSocket:
    port: {{ $port }}
  periodSeconds: 5
  failureThreshold: {{ div $probes.startupSeconds 5 }}
{{- end }}

{{/* The common arguments of a served component: listen on every address, fixed ports. */}}
{{- define "privproc.listenArgs" -}}
{{- $root := index . 0 -}}
- --host
- 0.0.0.0
- --grpc-port
- {{ $root.Values.ports.grpc | quote }}
{{- if index . 1 }}
- --http-port
- {{ $root.Values.ports.http | quote }}
{{- end }}
{{- end }}

{{/* Container ports; call with (list $ hasHttp). */}}
{{- define "privproc.containerPorts" -}}
{{- $root := index . 0 -}}
- name: grpc
  containerPort: {{ $root.Values.ports.grpc }}
  protocol: TCP
{{- if index . 1 }}
- name: http
  containerPort: {{ $root.Values.ports.http }}
  protocol: TCP
{{- end }}
{{- end }}

{{/* A Secret as a read-only volume; call with (list $ "volume-name" "secret-suffix"). */}}
{{- define "privproc.secretVolume" -}}
- name: {{ index . 1 }}
  secret:
    secretName: {{ printf "%s-%s" (include "privproc.secretPrefix" (index . 0)) (index . 2) }}
    defaultMode: 0440
{{- end }}

{{/* A component's Service; call with (dict "root" $ "component" "x" "values" .Values.x "http" true). */}}
{{- define "privproc.service" -}}
{{- $root := .root -}}
{{- $svc := .values.service | default dict }}
{{- $type := $svc.type | default "ClusterIP" }}
{{- $nodePorts := $svc.nodePorts | default dict }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "privproc.component" (list $root .component) }}
  labels:
    {{- include "privproc.labels" (list $root .component) | nindent 4 }}
  {{- with $svc.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $type }}
  selector:
    {{- include "privproc.selectorLabels" (list $root .component) | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $root.Values.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      {{- if and (eq $type "NodePort") $nodePorts.grpc }}
      nodePort: {{ $nodePorts.grpc }}
      {{- end }}
    {{- if .http }}
    - name: http
      port: {{ $root.Values.ports.http }}
      targetPort: http
      protocol: TCP
      {{- if and (eq $type "NodePort") $nodePorts.http }}
      nodePort: {{ $nodePorts.http }}
      {{- end }}
    {{- end }}
{{- end }}

{{/* PodDisruptionBudget: policy/v1 where served (or, rendered without a cluster, for Kubernetes
     >= 1.21), else policy/v1beta1. */}}
{{- define "privproc.pdb" -}}
{{- $root := .root -}}
{{- if .values.pdb.enabled }}
---
{{- if or ($root.Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget") (semverCompare ">=1.21-0" $root.Capabilities.KubeVersion.Version) }}
apiVersion: policy/v1
{{- else }}
apiVersion: policy/v1beta1
{{- end }}
kind: PodDisruptionBudget
metadata:
  name: {{ include "privproc.component" (list $root .component) }}
  labels:
    {{- include "privproc.labels" (list $root .component) | nindent 4 }}
spec:
  {{- if hasKey .values.pdb "maxUnavailable" }}
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  {{- else }}
  minAvailable: {{ .values.pdb.minAvailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "privproc.selectorLabels" (list $root .component) | nindent 6 }}
{{- end }}
{{- end }}

{{/* HorizontalPodAutoscaler: autoscaling/v2 where served (or, without a cluster, for Kubernetes
     >= 1.23), else autoscaling/v2beta2. */}}
{{- define "privproc.hpa" -}}
{{- $root := .root -}}
{{- if .values.hpa.enabled }}
---
{{- if or ($root.Capabilities.APIVersions.Has "autoscaling/v2/HorizontalPodAutoscaler") (semverCompare ">=1.23-0" $root.Capabilities.KubeVersion.Version) }}
apiVersion: autoscaling/v2
{{- else }}
apiVersion: autoscaling/v2beta2
{{- end }}
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "privproc.component" (list $root .component) }}
  labels:
    {{- include "privproc.labels" (list $root .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "privproc.component" (list $root .component) }}
  minReplicas: {{ .values.hpa.minReplicas }}
  maxReplicas: {{ .values.hpa.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .values.hpa.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}

{{/* Scheduling fields of a pod spec; call with a component's values. */}}
{{- define "privproc.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod-level fields every pod of the release shares (no service-account token by default). */}}
{{/* call with (list $ automountServiceAccountToken). */}}
{{- define "privproc.podCommon" -}}
{{- $root := index . 0 -}}
automountServiceAccountToken: {{ index . 1 }}
enableServiceLinks: false
securityContext:
  {{- include "privproc.podSecurityContext" $root | nindent 2 }}
{{- with $root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "privproc.podAnnotations" -}}
{{- if or .Values.podAnnotations .Values.image.digest }}
annotations:
  {{- with .Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .Values.image.digest }}
  {{- /* A new image under the same tag (imported, not pulled) still rolls every pod. */}}
  privproc.dev/image-digest: {{ . | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/* A StatefulSet's data volume: a claim template when persistence is on; call with
     (dict "root" $ "values" .Values.x). Emits the `volumeClaimTemplates:` block or nothing. */}}
{{- define "privproc.claimTemplates" -}}
{{- $p := .values.persistence -}}
{{- if $p.enabled }}
volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      {{- with $p.storageClass }}
      storageClassName: {{ . | quote }}
      {{- end }}
      resources:
        requests:
          storage: {{ $p.size }}
{{- end }}
{{- end }}

{{/* The data volume's pod-level entry when persistence is off (an emptyDir). */}}
{{- define "privproc.dataVolume" -}}
{{- if not .persistence.enabled }}
- name: data
  emptyDir: {}
{{- end }}
{{- end }}

{{/* `helm test` runs in development installs whose client has a relay, CDN, ledger and ACS. */}}
{{- define "privproc.testEnabled" -}}
{{- if and .Values.development (include "privproc.relayUrl" .) (include "privproc.cdnUrl" .) (include "privproc.ledgerTarget" .) (include "privproc.acsTarget" .) }}true{{ end }}
{{- end }}

{{/* NetworkPolicy rules. Egress to a peer's pods in this release, or (when it runs elsewhere)
     to any address on the port of the address values give it (a pod selector cannot name it);
     call with (list $ "component" enabled externalAddress port...). */}}
{{- define "privproc.np.egressTo" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $enabled := index . 2 }}
{{- $external := index . 3 }}
{{- $ports := slice . 4 }}
{{- if $enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "privproc.selectorLabels" (list $root $component) | nindent 10 }}
  ports:
    {{- range $ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- else if $external }}
- ports:
    - port: {{ include "privproc.portOf" $external }}
      protocol: TCP
{{- end }}
{{- end }}

{{/* The port of HOST:PORT or of a URL (its explicit port, else 443 for https, 80 for http). */}}
{{- define "privproc.portOf" -}}
{{- $explicit := regexFind ":[0-9]+(/|$)" . | trimPrefix ":" | trimSuffix "/" }}
{{- if $explicit }}{{ $explicit }}
{{- else if hasPrefix "https://" . }}443
{{- else }}80
{{- end }}
{{- end }}

{{- define "privproc.np.fromPods" -}}
{{- $root := index . 0 }}
{{- range slice . 1 }}
- podSelector:
    matchLabels:
      {{- include "privproc.selectorLabels" (list $root .) | nindent 6 }}
{{- end }}
{{- end }}
{{- define "privproc.np.public" -}}
{{- $root := index . 0 }}
- {{- with $root.Values.networkPolicy.publicFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    {{- range slice . 1 }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
