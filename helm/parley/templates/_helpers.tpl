{{/*
Chart name.
*/}}
{{- define "parley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Truncated to 40 characters so that the longest
derived name, "<fullname>-persistence-headless", stays within 63, and every
StatefulSet name within the 52 its controller-revision-hash label allows.
*/}}
{{- define "parley.fullname" -}}
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

{{/*
Name of one component's objects: (dict "ctx" $ "component" "edge").
*/}}
{{- define "parley.componentName" -}}
{{- printf "%s-%s" (include "parley.fullname" .ctx) .component }}
{{- end }}

{{- define "parley.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels: (dict "ctx" $ "component" "edge").
*/}}
{{- define "parley.labels" -}}
helm.sh/chart: {{ include "parley.chart" .ctx }}
{{ include "parley.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: parley
{{- end }}

{{- define "parley.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parley.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The image every container runs: repository@digest when image.digest is set
(it pins the exact image and overrides image.tag), else repository:tag.
*/}}
{{- define "parley.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
A host list given as a list or a comma-separated string, as one
comma-separated string: (dict "value" .Values.kafka.brokers "name" "kafka.brokers").
Fails when empty.
*/}}
{{- define "parley.hostList" -}}
{{- $v := .value }}
{{- if kindIs "slice" $v }}
{{- $v = join "," $v }}
{{- end }}
{{- $v = $v | toString | trim }}
{{- if not $v }}
{{- fail (printf "%s is required: the address(es) of the external server, host:port, comma-separated or a list" .name) }}
{{- end }}
{{- $v }}
{{- end }}

{{- define "parley.kafkaBrokers" -}}
{{- include "parley.hostList" (dict "value" .Values.kafka.brokers "name" "kafka.brokers") }}
{{- end }}

{{- define "parley.cassandraHosts" -}}
{{- include "parley.hostList" (dict "value" .Values.cassandra.hosts "name" "cassandra.hosts") }}
{{- end }}

{{/*
The Secret holding the JWT secret, validating jwt.* on the way: exactly one
of jwt.secret (at least 16 bytes) and jwt.existingSecret, or neither when
jwt.jwksUrl is set (empty then: no HS256 secret).
*/}}
{{- define "parley.jwtSecretName" -}}
{{- $jwt := .Values.jwt }}
{{- if and $jwt.secret $jwt.existingSecret }}
{{- fail "set only one of jwt.secret and jwt.existingSecret" }}
{{- else if $jwt.existingSecret }}
{{- $jwt.existingSecret }}
{{- else if $jwt.secret }}
{{- if lt (len $jwt.secret) 16 }}
{{- fail "jwt.secret must be at least 16 bytes" }}
{{- end }}
{{- printf "%s-jwt" (include "parley.fullname" .) }}
{{- else if $jwt.jwksUrl }}
{{- else }}
{{- fail "a JWT secret or JWKS is required: set jwt.jwksUrl (your identity provider's keys), or jwt.secret (at least 16 bytes; the chart creates a Secret) or jwt.existingSecret (the name of a Secret you created, with the key jwt.existingSecretKey)" }}
{{- end }}
{{- end }}

{{- define "parley.jwtSecretKey" -}}
{{- if .Values.jwt.existingSecret }}
{{- .Values.jwt.existingSecretKey }}
{{- else -}}
jwt-secret
{{- end }}
{{- end }}

{{/*
gRPC addresses of the internal Services, as the edge and fan-out dial them.
*/}}
{{- define "parley.ingestAddr" -}}
{{- printf "%s:7101" (include "parley.componentName" (dict "ctx" . "component" "ingest")) }}
{{- end }}
{{- define "parley.persistenceAddr" -}}
{{- printf "%s:7102" (include "parley.componentName" (dict "ctx" . "component" "persistence")) }}
{{- end }}
{{- define "parley.presenceAddr" -}}
{{- $name := include "parley.componentName" (dict "ctx" . "component" "presence") }}
{{- $addrs := list }}
{{- range $i := until (int .Values.presence.replicas) }}
{{- $addrs = append $addrs (printf "%s-%d.%s-headless:7104" $name $i $name) }}
{{- end }}
{{- join "," $addrs }}
{{- end }}

{{/*
Environment every service shares.
*/}}
{{- define "parley.commonEnv" -}}
- name: PARLEY_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{/*
PARLEY_INSTANCE_ID from the pod name (stable for a StatefulSet pod).
*/}}
{{- define "parley.instanceIDEnv" -}}
- name: PARLEY_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}

{{/*
Pod-level settings every workload shares.
*/}}
{{- define "parley.podSpecCommon" -}}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Pod metadata labels and annotations:
(dict "ctx" $ "component" "edge" "annotations" (dict ...)); "annotations"
is optional and merged with .Values.podAnnotations.
*/}}
{{- define "parley.podMetadata" -}}
labels:
  {{- include "parley.labels" . | nindent 2 }}
  {{- with .ctx.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $ann := merge (dict) (.annotations | default dict) .ctx.Values.podAnnotations }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Health probes on the container port named "http", or the one named by
"port": (dict "startupFailureThreshold" 12 "port" "admin"); the threshold
defaults to 12, i.e. 2 minutes.
*/}}
{{- define "parley.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ .port | default "http" }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: {{ .startupFailureThreshold | default 12 }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port | default "http" }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port | default "http" }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end }}

{{/*
Container settings every service shares: image, security context and a
writable /tmp on the otherwise read-only filesystem.
*/}}
{{- define "parley.containerCommon" -}}
image: {{ include "parley.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- with include "parley.securityMounts" . | trim }}{{ . | nindent 2 }}{{ end }}
{{- end }}

{{- define "parley.tmpVolume" -}}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
  {{- with include "parley.securityVolumes" . | trim }}{{ . | nindent 2 }}{{ end }}
{{- end }}

{{/*
The edge's limits (edge.limits) as PARLEY_* variables; an empty value
keeps the edge's default. Behind the Ingress with no trustedProxies every
client comes from the controller's address, so the per-address cap is
left off (-1) there rather than cap the controller.
*/}}
{{- define "parley.edgeLimitsEnv" -}}
{{- $l := .Values.edge.limits }}
{{- $env := list
  (list "PARLEY_CONN_MESSAGE_RATE" $l.connMessageRate)
  (list "PARLEY_USER_MESSAGE_RATE" $l.userMessageRate)
  (list "PARLEY_CONN_REQUEST_RATE" $l.connRequestRate)
  (list "PARLEY_USER_REQUEST_RATE" $l.userRequestRate)
  (list "PARLEY_GROUP_OP_RATE" $l.groupOpRate)
  (list "PARLEY_BLOCK_RATE" $l.blockRate)
  (list "PARLEY_MAX_CONNS_PER_USER" $l.maxConnsPerUser)
  (list "PARLEY_MAX_OUTSTANDING" $l.maxOutstanding)
  (list "PARLEY_QUEUE_BYTES" $l.queueBytes)
  (list "PARLEY_MAX_RESUME_CURSORS" $l.maxResumeCursors)
  (list "PARLEY_PING_INTERVAL" $l.pingInterval)
  (list "PARLEY_IDLE_TIMEOUT" $l.idleTimeout)
  (list "PARLEY_ALLOWED_ORIGINS" (join "," ($l.allowedOrigins | default list)))
  (list "PARLEY_TRUSTED_PROXIES" (join "," ($l.trustedProxies | default list)))
}}
{{- $perIP := $l.maxConnsPerIP }}
{{- if and .Values.edge.ingress.enabled (not $l.trustedProxies) }}
{{- $perIP = -1 }}
{{- end }}
{{- $env = append $env (list "PARLEY_MAX_CONNS_PER_IP" $perIP) }}
{{- range $env }}
{{- $v := index . 1 }}
{{- if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "float64" $v) }}
- name: {{ index . 0 }}
  value: {{ int64 $v | toString | quote }}
{{- else if and (kindIs "string" $v) (ne $v "") }}
- name: {{ index . 0 }}
  value: {{ $v | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
topologySpreadConstraints of one component's pods, one per entry of
topologySpread.constraints: (dict "ctx" $ "component" "edge"). The edge
(a Deployment) counts only pods of its current ReplicaSet
(pod-template-hash), so a rollout does not skew the spread; StatefulSets
replace pods one at a time and count them all.
*/}}
{{- define "parley.topologySpread" -}}
{{- $ts := .ctx.Values.topologySpread }}
{{- if and $ts.enabled $ts.constraints }}
topologySpreadConstraints:
{{- range $ts.constraints }}
  - topologyKey: {{ .topologyKey }}
    maxSkew: {{ .maxSkew | default 1 }}
    whenUnsatisfiable: {{ .whenUnsatisfiable | default "ScheduleAnyway" }}
    labelSelector:
      matchLabels:
        {{- include "parley.selectorLabels" $ | nindent 8 }}
    {{- if eq $.component "edge" }}
    matchLabelKeys:
      - pod-template-hash
    {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
replicas of a workload, left out when a HorizontalPodAutoscaler owns the
count (otherwise every helm upgrade would reset it): (dict "ctx" $
"component" "ingest").
*/}}
{{- define "parley.replicas" -}}
{{- $v := index .ctx.Values .component }}
{{- if not (and $v.autoscaling $v.autoscaling.enabled) }}
replicas: {{ $v.replicas }}
{{- end }}
{{- end }}

{{/*
The ports each component listens on, for the NetworkPolicies and the
metrics Services. admin serves /healthz, /readyz and /metrics; the edge's
is a port of its own, never its public one.
*/}}
{{- define "parley.ports" -}}
edge: {public: 8080, admin: 8100, adminName: admin, grpc: 7100}
ingest: {admin: 8101, adminName: http, grpc: 7101}
fanout: {admin: 8103, adminName: http}
persistence: {admin: 8102, adminName: http, grpc: 7102}
presence: {admin: 8104, adminName: http, grpc: 7104}
{{- end }}

{{/*
The distinct ports of a host:port list, for NetworkPolicy egress:
(dict "value" .Values.kafka.brokers "name" "kafka.brokers"). Fails on an
entry without a port.
*/}}
{{- define "parley.hostPorts" -}}
{{- $ports := list }}
{{- range (include "parley.hostList" . | splitList ",") }}
{{- $p := regexFind ":[0-9]+$" (trim .) | trimPrefix ":" }}
{{- if not $p }}
{{- fail (printf "networkPolicy needs the port of every %s entry (host:port), got %q; or set the ports in networkPolicy" $.name (trim .)) }}
{{- end }}
{{- $ports = append $ports (int $p) }}
{{- end }}
{{- $ports | uniq | toJson }}
{{- end }}

{{/*
"N replicas" or "autoscaled MIN-MAX replicas", for NOTES.txt:
(dict "ctx" $ "component" "edge").
*/}}
{{- define "parley.notesReplicas" -}}
{{- $v := index .ctx.Values .component }}
{{- if and $v.autoscaling $v.autoscaling.enabled -}}
autoscaled {{ $v.autoscaling.minReplicas }}-{{ $v.autoscaling.maxReplicas }} replicas
{{- else -}}
{{ $v.replicas }} replicas
{{- end }}
{{- end }}
