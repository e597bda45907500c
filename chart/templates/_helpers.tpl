{{/*
The name in resource names and labels. The chart is published as
knative-websocket-server (the project's and the image's name); what it
creates keeps the short name websocket-server, as kustomize/base does.
*/}}
{{- define "websocket-server.name" -}}
{{- default "websocket-server" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the Service. Knative names revisions "<name>-00001", and a
revision name must be a DNS label of at most 63 characters, so the name is
refused (not silently cut) past 57 characters.
*/}}
{{- define "websocket-server.fullname" -}}
{{- $name := "" }}
{{- if .Values.fullnameOverride }}
{{- $name = .Values.fullnameOverride }}
{{- else }}
{{- $base := include "websocket-server.name" . }}
{{- if contains $base .Release.Name }}
{{- $name = .Release.Name }}
{{- else }}
{{- $name = printf "%s-%s" .Release.Name $base }}
{{- end }}
{{- end }}
{{- if gt (len $name) 57 }}
{{- fail (printf "service name %q is %d characters long: Knative appends \"-00001\" to name revisions, which must stay within 63 characters, so use at most 57 (set fullnameOverride or a shorter release name)" $name (len $name)) }}
{{- end }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "service name %q is not a DNS-1035 label (lower-case letters, digits and '-', starting with a letter)" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "websocket-server.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release.
*/}}
{{- define "websocket-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "websocket-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "websocket-server.labels" -}}
helm.sh/chart: {{ include "websocket-server.chart" . }}
{{ include "websocket-server.selectorLabels" . }}
app.kubernetes.io/part-of: knative-websocket-server
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Image reference: a digest wins over a tag; the tag defaults to appVersion.
*/}}
{{- define "websocket-server.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The server container, shared by every deployment mode. Call it with
(dict "root" $ "probePort" "") - Knative forbids a probe port (it routes
probes itself) - or (dict "root" $ "probePort" "http1") for plain Kubernetes,
which requires one.
*/}}
{{- define "websocket-server.container" -}}
{{- $probePort := .probePort }}
{{- with .root }}
name: websocket-server
image: {{ include "websocket-server.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
ports:
  - name: http1
    containerPort: 8080
env:
  - name: WS_LOG_LEVEL
    value: {{ .Values.server.logLevel | quote }}
  - name: WS_LOG_FORMAT
    value: {{ .Values.server.logFormat | quote }}
  - name: WS_LOG_MESSAGES
    value: {{ .Values.server.logMessages | toString | quote }}
  - name: WS_LOG_CONTENT
    value: {{ .Values.server.logContent | toString | quote }}
  - name: WS_MAX_MESSAGE_BYTES
    value: {{ .Values.server.maxMessageBytes | int64 | toString | quote }}
  - name: WS_PING_INTERVAL
    value: {{ .Values.server.pingInterval | toString | quote }}
  - name: WS_PING_TIMEOUT
    value: {{ .Values.server.pingTimeout | toString | quote }}
  - name: WS_MAX_CONNECTIONS
    value: {{ .Values.server.maxConnections | int64 | toString | quote }}
  {{- with .Values.server.allowedOrigins }}
  - name: WS_ALLOWED_ORIGINS
    value: {{ join "," . | quote }}
  {{- end }}
  - name: WS_COMPRESSION
    value: {{ .Values.server.compression | toString | quote }}
  - name: WS_DRAIN_TIMEOUT
    value: {{ .Values.server.drainTimeout | toString | quote }}
  - name: WS_DRAIN_SPREAD
    value: {{ .Values.server.drainSpread | toString | quote }}
  - name: WS_SEND_TIMEOUT
    value: {{ .Values.server.sendTimeout | toString | quote }}
  - name: WS_WORKERS
    value: {{ .Values.server.workers | int64 | toString | quote }}
  - name: WS_TRUSTED_PROXIES
    value: {{ .Values.server.trustedProxies | default (list "none") | join "," | quote }}
  - name: WS_FORWARDED_HEADER
    value: {{ .Values.server.forwardedHeader | quote }}
  - name: WS_LOG_MESSAGE_RATE
    value: {{ .Values.server.logMessageRate | toString | quote }}
  - name: WS_LOG_MESSAGE_BURST
    value: {{ .Values.server.logMessageBurst | int64 | toString | quote }}
  - name: WS_REQUEST_HEAD_TIMEOUT
    value: {{ .Values.server.requestHeadTimeout | toString | quote }}
  - name: WS_IDLE_TIMEOUT
    value: {{ .Values.server.idleTimeout | toString | quote }}
  - name: WS_MAX_CONNECTION_AGE
    value: {{ include "websocket-server.maxConnectionAge" . | quote }}
  {{- with .Values.backplane }}
  {{- if .existingSecret.name }}
  - name: WS_BACKPLANE_URL
    valueFrom:
      secretKeyRef:
        name: {{ .existingSecret.name }}
        key: {{ .existingSecret.key | quote }}
  {{- else if .redisUrl }}
  - name: WS_BACKPLANE_URL
    value: {{ .redisUrl | quote }}
  {{- end }}
  {{- end }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
readinessProbe:
  httpGet:
    path: /readyz
    {{- if $probePort }}
    port: {{ $probePort }}
    {{- end }}
  periodSeconds: {{ .Values.readinessProbe.periodSeconds }}
  failureThreshold: {{ .Values.readinessProbe.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    {{- if $probePort }}
    port: {{ $probePort }}
    {{- end }}
  periodSeconds: {{ .Values.livenessProbe.periodSeconds }}
  failureThreshold: {{ .Values.livenessProbe.failureThreshold }}
{{- with .Values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
WS_MAX_CONNECTION_AGE: server.maxConnectionAge, or (null) timeoutSeconds
minus max(10 s, 10 %) - 540 for 600, 50 for 60 - so the server's clean close
(1001, jittered, never later than the age) comes before Knative cuts the
connection at timeoutSeconds. The same default in plain Kubernetes mode,
where nothing cuts it but a maximum age still rebalances connections.
*/}}
{{- define "websocket-server.maxConnectionAge" -}}
{{- $timeout := int .Values.timeoutSeconds }}
{{- if kindIs "invalid" .Values.server.maxConnectionAge }}
{{- $age := sub $timeout (max 10 (div (add $timeout 9) 10)) }}
{{- if lt $age 1 }}
{{- fail (printf "timeoutSeconds (%d) leaves no room for the default server.maxConnectionAge (timeoutSeconds minus max(10 s, 10 %%)): raise timeoutSeconds, or set server.maxConnectionAge (0 turns it off)" $timeout) }}
{{- end }}
{{- $age }}
{{- else }}
{{- int64 .Values.server.maxConnectionAge }}
{{- end }}
{{- end }}

{{/*
Checks every mode shares: the drain must end before the pod is killed; in
Knative mode a connection's maximum age must end before timeoutSeconds; the
backplane's URL comes from one place (values.schema.json cannot compare two
fields).
*/}}
{{- define "websocket-server.validate" -}}
{{- $age := int (include "websocket-server.maxConnectionAge" .) }}
{{- if and (eq .Values.mode "knative") (ge $age (int .Values.timeoutSeconds)) }}
{{- fail (printf "server.maxConnectionAge (%d) must be below timeoutSeconds (%d): Knative cuts a connection at timeoutSeconds with no close frame (1006), so the server's clean close (1001) must come first; leave it null for timeoutSeconds minus max(10 s, 10 %%), or 0 to turn it off" $age (int .Values.timeoutSeconds)) }}
{{- end }}
{{- $grace := int .Values.timeoutSeconds }}
{{- $what := "timeoutSeconds (Knative's grace period for the pod)" }}
{{- if eq .Values.mode "kubernetes" }}
{{- $grace = int .Values.kubernetes.terminationGracePeriodSeconds }}
{{- $what = "kubernetes.terminationGracePeriodSeconds" }}
{{- end }}
{{- if and .Values.backplane.redisUrl .Values.backplane.existingSecret.name }}
{{- fail "set one of backplane.redisUrl and backplane.existingSecret.name, not both: the Secret is the one for production (redisUrl puts the password in the manifest)" }}
{{- end }}
{{- if ge (int .Values.server.drainTimeout) $grace }}
{{- fail (printf "server.drainTimeout (%v) must be below %s (%v): the drain must finish before the pod is killed" .Values.server.drainTimeout $what $grace) }}
{{- end }}
{{- end }}
