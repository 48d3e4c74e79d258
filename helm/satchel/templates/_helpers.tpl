{{/*
Helpers. Every template here takes the chart's root context. An agent chart that lists
this chart as a dependency passes the subchart's context: `.Subcharts.satchel` (the name,
or alias, of the dependency), so .Values are Satchel's own values with their defaults.
No name below depends on .Chart.Name, so the names agree in both contexts.
*/}}

{{- define "satchel.name" -}}
{{- default "satchel" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "satchel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "satchel.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "satchel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "satchel.labels" -}}
helm.sh/chart: {{ include "satchel.chart" . }}
{{ include "satchel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end -}}

{{- define "satchel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "satchel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "satchel.configMapName" -}}
{{- if .Values.spicepod.existingConfigMap -}}
{{- .Values.spicepod.existingConfigMap -}}
{{- else -}}
{{- printf "%s-spicepod" (include "satchel.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}
{{- end -}}

{{- define "satchel.pvcName" -}}
{{- if .Values.persistence.pvc.existingClaim -}}
{{- .Values.persistence.pvc.existingClaim -}}
{{- else -}}
{{- printf "%s-data" (include "satchel.fullname" . | trunc 58 | trimSuffix "-") -}}
{{- end -}}
{{- end -}}

{{- define "satchel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "satchel.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository[:tag][@digest]; the tag defaults to the chart's appVersion, never "latest". */}}
{{- define "satchel.imageRef" -}}
{{- $image := .image -}}
{{- $tag := toString (default .default $image.tag) -}}
{{- if eq $tag "latest" -}}
{{- fail (printf "%s.tag: \"latest\" is not allowed; pin a version (the default is the chart's appVersion)" .path) -}}
{{- end -}}
{{- if $image.digest -}}
{{- if $tag -}}
{{- printf "%s:%s@%s" $image.repository $tag $image.digest -}}
{{- else -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- end -}}
{{- else -}}
{{- if not $tag -}}
{{- fail (printf "%s.tag is required" .path) -}}
{{- end -}}
{{- printf "%s:%s" $image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "satchel.image" -}}
{{- include "satchel.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion "path" "image") -}}
{{- end -}}

{{/*
The spicepod exactly as the ConfigMap holds it: trailing whitespace trimmed, one final
newline. The checksum annotation is the sha256 of this string.
*/}}
{{- define "satchel.spicepodContent" -}}
{{- $content := .Values.spicepod.content -}}
{{- if ne .Values.snapshots.role "none" -}}
{{- $content = include "satchel.withSnapshots" . | fromYaml -}}
{{- end -}}
{{- $text := "" -}}
{{- if empty $content -}}
{{- $text = toYaml (dict "version" "v1" "kind" "Spicepod" "name" (include "satchel.fullname" .)) -}}
{{- else if kindIs "string" $content -}}
{{- $text = $content -}}
{{- else -}}
{{- $text = toYaml $content -}}
{{- end -}}
{{- printf "%s\n" (regexReplaceAll "\\s+$" $text "") -}}
{{- end -}}

{{/*
Checksum that changes whenever the pod's spicepod changes, so a new spicepod rolls the
pods. With an existing ConfigMap the chart looks it up at install/upgrade time (empty
under `helm template`), and the ConfigMap's name is hashed in as well.
*/}}
{{- define "satchel.spicepodChecksum" -}}
{{- if .Values.spicepod.existingConfigMap -}}
{{- $cm := lookup "v1" "ConfigMap" .Release.Namespace .Values.spicepod.existingConfigMap -}}
{{- printf "%s\n%s" .Values.spicepod.existingConfigMap (toYaml (default dict $cm.data)) | sha256sum -}}
{{- else -}}
{{- include "satchel.spicepodContent" . | sha256sum -}}
{{- end -}}
{{- end -}}

{{/* Scheme for Satchel's HTTP endpoints. */}}
{{- define "satchel.httpScheme" -}}
{{- if .Values.tls.enabled -}}https{{- else -}}http{{- end -}}
{{- end -}}

{{/* A probe from values: drop `enabled`, default httpGet.scheme to HTTPS under TLS. */}}
{{- define "satchel.probe" -}}
{{- $probe := omit (deepCopy .probe) "enabled" -}}
{{- if and .tls (kindIs "map" $probe.httpGet) -}}
{{- if not $probe.httpGet.scheme -}}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" -}}
{{- end -}}
{{- end -}}
{{- toYaml $probe -}}
{{- end -}}

{{/*
The spicepod with the snapshot store (runtime.snapshots) and this release's role written into
it: every accelerated dataset publishes (publisher: create_only) or follows (follower: follow).
Credentials are references to the env the credentials Secret provides, never values.
*/}}
{{- define "satchel.withSnapshots" -}}
{{- $snap := .Values.snapshots -}}
{{- if not (kindIs "map" .Values.spicepod.content) -}}
{{- fail "snapshots.role needs spicepod.content as a YAML map (the chart writes runtime.snapshots and each accelerated dataset's acceleration.snapshots into it)" -}}
{{- end -}}
{{- if not $snap.location -}}
{{- fail "snapshots.location (s3://bucket/prefix) is required when snapshots.role is set" -}}
{{- end -}}
{{- $pod := deepCopy .Values.spicepod.content -}}
{{- $params := dict "s3_region" $snap.region -}}
{{- if $snap.endpoint -}}
{{- $_ := set $params "s3_endpoint" $snap.endpoint -}}
{{- end -}}
{{- if $snap.credentialsSecret -}}
{{- $_ := set $params "s3_key" "${secrets:SATCHEL_SNAPSHOT_S3_KEY}" -}}
{{- $_ := set $params "s3_secret" "${secrets:SATCHEL_SNAPSHOT_S3_SECRET}" -}}
{{- end -}}
{{- $store := dict "enabled" true "location" $snap.location "keep" (int $snap.keep) "params" $params -}}
{{- if $snap.maxStaleness -}}
{{- $_ := set $store "max_staleness" $snap.maxStaleness -}}
{{- end -}}
{{- if ne $snap.fallback "none" -}}
{{- $_ := set $store "fallback" $snap.fallback -}}
{{- end -}}
{{- $runtime := default dict $pod.runtime -}}
{{- $_ := set $runtime "snapshots" $store -}}
{{- $_ := set $pod "runtime" $runtime -}}
{{- $mode := ternary "create_only" "follow" (eq $snap.role "publisher") -}}
{{- range $ds := (default list $pod.datasets) -}}
{{- if kindIs "map" $ds.acceleration -}}
{{- if not (and (hasKey $ds.acceleration "enabled") (eq (toString $ds.acceleration.enabled) "false")) -}}
{{- $_ := set $ds.acceleration "snapshots" $mode -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $pod -}}
{{- end -}}
