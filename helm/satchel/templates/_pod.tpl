{{/*
The pieces of a pod that runs Satchel. The public ones, for an agent's own chart, are
the satchel.sidecar.* templates at the end; each takes Satchel's context (in an agent
chart: `.Subcharts.satchel`), e.g.

  template:
    metadata:
      labels:
        {{- include "satchel.sidecar.podLabels" .Subcharts.satchel | nindent 8 }}
      annotations:
        {{- include "satchel.sidecar.podAnnotations" .Subcharts.satchel | nindent 8 }}
    spec:
      initContainers:
        {{- include "satchel.sidecar.container" .Subcharts.satchel | nindent 8 }}
      containers:
        - name: agent
          env:
            {{- include "satchel.sidecar.clientEnv" .Subcharts.satchel | nindent 12 }}
      volumes:
        {{- include "satchel.sidecar.volumes" .Subcharts.satchel | nindent 8 }}
*/}}

{{/* The Satchel container as a list entry. Args: ctx (root context), sidecar (bool). */}}
{{- define "satchel.containerEntry" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- include "satchel.validate" $ctx -}}
- name: satchel
  image: {{ include "satchel.image" $ctx | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if .sidecar }}
  # Native sidecar: started before the agent, kept running, stopped after it.
  restartPolicy: Always
  {{- end }}
  {{- with $v.extraArgs }}
  args:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: satchel-http
      containerPort: {{ $v.ports.http }}
      protocol: TCP
    - name: satchel-flight
      containerPort: {{ $v.ports.flight }}
      protocol: TCP
    - name: satchel-metrics
      containerPort: {{ $v.ports.metrics }}
      protocol: TCP
  env:
    - name: SATCHEL_POD
      value: {{ printf "%s/%s" (trimSuffix "/" $v.spicepod.mountPath) $v.spicepod.key | quote }}
    - name: SATCHEL_HTTP
      value: {{ printf "0.0.0.0:%d" (int $v.ports.http) | quote }}
    - name: SATCHEL_FLIGHT
      value: {{ printf "0.0.0.0:%d" (int $v.ports.flight) | quote }}
    - name: SATCHEL_METRICS
      value: {{ printf "0.0.0.0:%d" (int $v.ports.metrics) | quote }}
    - name: SATCHEL_DATA_DIR
      value: {{ $v.persistence.mountPath | quote }}
    - name: SATCHEL_MEMORY_LIMIT
      valueFrom:
        resourceFieldRef:
          resource: limits.memory
          divisor: "1"
    {{- with $v.snapshots.credentialsSecret }}
    - name: SATCHEL_SNAPSHOT_S3_KEY
      valueFrom:
        secretKeyRef:
          name: {{ . | quote }}
          key: access-key
    - name: SATCHEL_SNAPSHOT_S3_SECRET
      valueFrom:
        secretKeyRef:
          name: {{ . | quote }}
          key: secret-key
    {{- end }}
    {{- range $name, $ref := $v.secretEnv }}
    - name: {{ $name }}
      valueFrom:
        secretKeyRef:
          name: {{ $ref.secretName | quote }}
          key: {{ $ref.key | quote }}
          {{- if hasKey $ref "optional" }}
          optional: {{ $ref.optional }}
          {{- end }}
    {{- end }}
    {{- with $v.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $v.probes.startup.enabled }}
  startupProbe:
    {{- include "satchel.probe" (dict "probe" $v.probes.startup "tls" $v.tls.enabled) | nindent 4 }}
  {{- end }}
  {{- if $v.probes.liveness.enabled }}
  livenessProbe:
    {{- include "satchel.probe" (dict "probe" $v.probes.liveness "tls" $v.tls.enabled) | nindent 4 }}
  {{- end }}
  {{- if $v.probes.readiness.enabled }}
  readinessProbe:
    {{- include "satchel.probe" (dict "probe" $v.probes.readiness "tls" $v.tls.enabled) | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: satchel-spicepod
      mountPath: {{ $v.spicepod.mountPath | quote }}
      readOnly: true
    - name: satchel-data
      mountPath: {{ $v.persistence.mountPath | quote }}
    - name: satchel-tmp
      mountPath: /tmp
    {{- if $v.tls.enabled }}
    - name: satchel-tls
      mountPath: {{ $v.tls.mountPath | quote }}
      readOnly: true
    {{- end }}
    {{- if $v.modelVolume.enabled }}
    - name: satchel-models
      mountPath: {{ $v.modelVolume.mountPath | quote }}
      readOnly: true
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* The volumes the Satchel container mounts, as list entries. */}}
{{- define "satchel.volumeEntries" -}}
{{- $v := .Values -}}
- name: satchel-spicepod
  configMap:
    name: {{ include "satchel.configMapName" . }}
    items:
      - key: {{ $v.spicepod.key | quote }}
        path: {{ $v.spicepod.key | quote }}
- name: satchel-data
  {{- if eq $v.persistence.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ include "satchel.pvcName" . }}
  {{- else }}
  {{- $data := dict }}
  {{- with $v.persistence.emptyDir.medium }}{{ $_ := set $data "medium" . }}{{ end }}
  {{- with $v.persistence.emptyDir.sizeLimit }}{{ $_ := set $data "sizeLimit" . }}{{ end }}
  emptyDir:
    {{- toYaml $data | nindent 4 }}
  {{- end }}
- name: satchel-tmp
  {{- $tmp := dict }}
  {{- with $v.tmp.sizeLimit }}{{ $_ := set $tmp "sizeLimit" . }}{{ end }}
  emptyDir:
    {{- toYaml $tmp | nindent 4 }}
{{- if $v.tls.enabled }}
- name: satchel-tls
  secret:
    secretName: {{ $v.tls.secretName | quote }}
    defaultMode: {{ $v.tls.defaultMode | int }}
{{- end }}
{{- if $v.modelVolume.enabled }}
- name: satchel-models
  {{- toYaml $v.modelVolume.source | nindent 2 }}
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Environment for the agent container: where Satchel answers inside the pod. */}}
{{- define "satchel.clientEnvEntries" -}}
{{- $v := .Values -}}
- name: SATCHEL_URL
  value: {{ printf "%s://127.0.0.1:%d" (include "satchel.httpScheme" .) (int $v.ports.http) | quote }}
- name: SATCHEL_FLIGHT_URL
  value: {{ printf "%s://127.0.0.1:%d" (ternary "grpc+tls" "grpc" $v.tls.enabled) (int $v.ports.flight) | quote }}
{{- end -}}

{{/* ------------------------------------------------------------------------------
     Public named templates for an agent's own chart (pass `.Subcharts.satchel`).
     ------------------------------------------------------------------------------ */}}

{{/* The native sidecar: one `initContainers` list entry. */}}
{{- define "satchel.sidecar.container" -}}
{{- include "satchel.containerEntry" (dict "ctx" . "sidecar" true) -}}
{{- end -}}

{{/* The pod volumes the sidecar mounts: `volumes` list entries. */}}
{{- define "satchel.sidecar.volumes" -}}
{{- include "satchel.volumeEntries" . -}}
{{- end -}}

{{/* Pod annotations: checksum/spicepod (a changed spicepod rolls the pods). */}}
{{- define "satchel.sidecar.podAnnotations" -}}
checksum/spicepod: {{ include "satchel.spicepodChecksum" . | quote }}
{{- end -}}

{{/* Pod labels: the label the sidecar-mode PodMonitor selects. */}}
{{- define "satchel.sidecar.podLabels" -}}
satchel-sidecar: {{ include "satchel.fullname" . }}
{{- end -}}

{{/* Env entries for the agent container: SATCHEL_URL, SATCHEL_FLIGHT_URL. */}}
{{- define "satchel.sidecar.clientEnv" -}}
{{- include "satchel.clientEnvEntries" . -}}
{{- end -}}

{{/* Pod-level fields shared by both modes' Deployments. */}}
{{- define "satchel.podSpecCommon" -}}
{{- $v := .Values -}}
serviceAccountName: {{ include "satchel.serviceAccountName" . }}
automountServiceAccountToken: {{ $v.automountServiceAccountToken }}
enableServiceLinks: {{ $v.enableServiceLinks }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
