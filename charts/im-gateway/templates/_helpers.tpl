{{/* Chart name, overridable. */}}
{{- define "im-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release already contains the chart name. */}}
{{- define "im-gateway.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-<component>. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "im-gateway.componentName" -}}
{{- printf "%s-%s" (include "im-gateway.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "im-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "im-gateway.labels" -}}
helm.sh/chart: {{ include "im-gateway.chart" . }}
{{ include "im-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: im-platform
{{- with .Values.region }}
im.platform/region: {{ . | quote }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "im-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "im-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "im-gateway.componentLabels" -}}
{{ include "im-gateway.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "im-gateway.componentSelectorLabels" -}}
{{ include "im-gateway.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "im-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "im-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository@digest, else repository:tag (tag defaults to appVersion). Call with (dict "root" $ "image" .Values.gateway.image). */}}
{{- define "im-gateway.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if eq $tag "latest" }}
{{- fail (printf "%s: the mutable tag 'latest' is not allowed; pin a version" .image.repository) }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* Secret holding the JWT verification key. */}}
{{- define "im-gateway.authSecretName" -}}
{{- default (printf "%s-auth" (include "im-gateway.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* Environment shared by gateway and dispatcher (the IMGW_* contract). */}}
{{- define "im-gateway.backendEnv" -}}
- name: IMGW_LISTEN_HOST
  value: "0.0.0.0"
- name: IMGW_NODE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: IMGW_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: IMGW_KAFKA_TOPIC
  value: {{ .Values.kafka.topic | quote }}
- name: IMGW_REDIS_URL
  value: {{ .Values.redis.url | quote }}
- name: IMGW_REDIS_CLUSTER
  value: {{ .Values.redis.cluster | quote }}
- name: IMGW_CASSANDRA_HOSTS
  value: {{ .Values.cassandra.hosts | quote }}
- name: IMGW_CASSANDRA_KEYSPACE
  value: {{ .Values.cassandra.keyspace | quote }}
{{- with .Values.cassandra.datacenter }}
- name: IMGW_CASSANDRA_DATACENTER
  value: {{ . | quote }}
{{- end }}
- name: IMGW_KAFKA_DELIVERIES_TOPIC
  value: {{ .Values.kafka.deliveriesTopic | quote }}
{{- with .Values.region }}
- name: IMGW_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.regions }}
- name: IMGW_REGIONS
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}

{{/* Backend logins (docs/security.md). A login is a "kind" (kafka, redis or cassandra) and the
Secret of one identity (keys username and password; "" = no login). The password is a mounted
file, never an env var; so is the CA that signed the backend's certificate. One home for the
paths: the env below names the mounts below. */}}
{{- define "im-gateway.loginDir" -}}/etc/im-gateway/{{ .kind }}-login{{- end }}
{{- define "im-gateway.caDir" -}}/etc/im-gateway/{{ .kind }}-ca{{- end }}

{{/* true when the kind's CA is mounted: its caSecret is set (and Redis' URL is rediss://). */}}
{{- define "im-gateway.backendCa" -}}
{{- $values := index .root.Values .kind }}
{{- if and $values.caSecret (or (ne .kind "redis") (hasPrefix "rediss://" $values.url)) }}true{{ end }}
{{- end }}

{{/* IMGW_<KIND>_USERNAME, _PASSWORD_FILE, _CA_FILE. Call with (dict "root" $ "kind" "redis" "secret" ...). */}}
{{- define "im-gateway.loginEnv" -}}
{{- $prefix := printf "IMGW_%s" (upper .kind) }}
{{- if .secret }}
- name: {{ $prefix }}_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: username
- name: {{ $prefix }}_PASSWORD_FILE
  value: {{ include "im-gateway.loginDir" . }}/password
{{- end }}
{{- if include "im-gateway.backendCa" . }}
- name: {{ $prefix }}_CA_FILE
  value: {{ include "im-gateway.caDir" . }}/ca.crt
{{- end }}
{{- end }}

{{/* The volume mounts of loginEnv (same arguments). */}}
{{- define "im-gateway.loginMounts" -}}
{{- if .secret }}
- name: {{ .kind }}-login
  mountPath: {{ include "im-gateway.loginDir" . }}
  readOnly: true
{{- end }}
{{- if include "im-gateway.backendCa" . }}
- name: {{ .kind }}-ca
  mountPath: {{ include "im-gateway.caDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* The volumes of loginEnv, with only the keys a process reads (same arguments). */}}
{{- define "im-gateway.loginVolumes" -}}
{{- if .secret }}
- name: {{ .kind }}-login
  secret:
    secretName: {{ .secret }}
    items:
      - key: password
        path: password
{{- end }}
{{- if include "im-gateway.backendCa" . }}
- name: {{ .kind }}-ca
  secret:
    secretName: {{ (index .root.Values .kind).caSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}

{{/* Kafka, Redis and Cassandra logins of one identity: env, mounts or volumes ("what"). Call
with (dict "root" $ "what" "Env" "identity" "gateway"); identity: gateway, dispatcher, relay,
migrate. */}}
{{- define "im-gateway.logins" -}}
{{- $auth := dict "kafka" .root.Values.kafka.auth "redis" .root.Values.redis.auth "cassandra" .root.Values.cassandra.auth }}
{{- range $kind := list "kafka" "redis" "cassandra" }}
{{- $logins := index $auth $kind | default dict }}
{{- /* The relay logs in as the dispatcher where its kind has no relaySecret (Redis, Cassandra). */}}
{{- $identity := ternary "dispatcher" $.identity (and (eq $.identity "relay") (not (hasKey $logins "relaySecret"))) }}
{{- $secret := index $logins (printf "%sSecret" $identity) | default "" }}
{{- include (printf "im-gateway.login%s" $.what) (dict "root" $.root "kind" $kind "secret" $secret) }}
{{- end }}
{{- end }}

{{/* Checks of region and regions (the processes refuse to start otherwise). */}}
{{- define "im-gateway.checkRegions" -}}
{{- if .Values.regions }}
{{- if not .Values.region }}
{{- fail "regions is set: set region too (this release's entry of regions)" }}
{{- end }}
{{- if not (has .Values.region .Values.regions) }}
{{- fail (printf "regions (%s) must include region (%s)" (join "," .Values.regions) .Values.region) }}
{{- end }}
{{- end }}
{{- if and (eq (toString .Values.relay.enabled) "true") (lt (len .Values.regions) 2) }}
{{- fail "relay.enabled is true but regions lists no peer region: the relay would relay nothing (set regions, or relay.enabled=auto)" }}
{{- end }}
{{- end }}

{{/* "true" when the relay runs: relay.enabled true, or auto and regions lists a peer. */}}
{{- define "im-gateway.relayEnabled" -}}
{{- $enabled := toString .Values.relay.enabled }}
{{- if or (eq $enabled "true") (and (eq $enabled "auto") (gt (len .Values.regions) 1)) }}true{{ end }}
{{- end }}

{{/* The components that run: gateway, dispatcher, and relay when enabled. */}}
{{- define "im-gateway.backendComponents" -}}
{{- if include "im-gateway.relayEnabled" . }}dispatcher relay{{ else }}dispatcher{{ end }}
{{- end }}

{{/* Spread across zones (hard) and nodes (soft). Call with (dict "root" $ "component" "gateway" "skew" 1). */}}
{{- define "im-gateway.topologySpread" -}}
- maxSkew: {{ .skew }}
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: DoNotSchedule
  labelSelector:
    matchLabels:
      {{- include "im-gateway.componentSelectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "im-gateway.componentSelectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
{{- end }}

{{/* Grace period: preStop pause + drain window + margin, so the drain always finishes before SIGKILL. */}}
{{- define "im-gateway.gatewayGracePeriod" -}}
{{- add .Values.gateway.preStopSleepSeconds .Values.gateway.drainWindowSeconds .Values.gateway.terminationGraceMarginSeconds }}
{{- end }}

{{/* The gateway's rolling update, within the reconnect budget (README: "Rolling updates within
the reconnect budget"). A replaced pod's clients reconnect over its drain window, at
connectionsPerPod / drainWindowSeconds per second; maxSurge pods are replaced at once, so
maxSurge = max(1, floor(reconnectsPerSecond x drainWindowSeconds / connectionsPerPod)). A new
pod must stay ready minReadySeconds = preStopSleepSeconds + drainWindowSeconds before the next
old pod goes, so one batch has drained before the next starts. Explicit values win. */}}
{{- define "im-gateway.gatewayStrategy" -}}
{{- $gateway := .Values.gateway }}
{{- $strategy := $gateway.strategy }}
{{- $surge := $strategy.maxSurge }}
{{- if eq (toString $surge) "" }}
{{- if ne (toString $strategy.maxUnavailable) "0" }}
{{- fail (printf "gateway.strategy.maxUnavailable is %v: the derived maxSurge assumes 0 (the pods it takes would drain too); set gateway.strategy.maxSurge explicitly" $strategy.maxUnavailable) }}
{{- end }}
{{- $surge = max 1 (div (mul (int64 $strategy.reconnectsPerSecond) (int64 $gateway.drainWindowSeconds)) (int64 $gateway.autoscaling.connectionsPerPod)) }}
{{- end }}
{{- $minReady := $strategy.minReadySeconds }}
{{- if eq (toString $minReady) "" }}
{{- $minReady = add $gateway.preStopSleepSeconds $gateway.drainWindowSeconds }}
{{- end }}
maxSurge: {{ $surge }}
maxUnavailable: {{ $strategy.maxUnavailable }}
minReadySeconds: {{ $minReady }}
{{- end }}
