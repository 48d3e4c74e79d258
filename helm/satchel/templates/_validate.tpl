{{/*
Checks that values.schema.json cannot express. Each failure names the value to fix.
Called once from every rendering path (satchel.validate) with the root context.
*/}}

{{- define "satchel.validate" -}}
{{- $v := .Values -}}
{{- if and (eq $v.mode "sidecar") $v.agent.enabled (not $v.agent.image.repository) -}}
{{- fail "mode=sidecar with agent.enabled=true renders the agent's Deployment: set agent.image.repository (or agent.enabled=false and include the satchel.sidecar.* templates from the agent's own chart)" -}}
{{- end -}}
{{- if and (eq $v.mode "sidecar") $v.metrics.serviceMonitor.enabled -}}
{{- fail "metrics.serviceMonitor.enabled needs a Service, which only mode=standalone has: use metrics.podMonitor.enabled in sidecar mode" -}}
{{- end -}}
{{- if and $v.tls.enabled (not $v.tls.secretName) -}}
{{- fail "tls.enabled=true needs tls.secretName (a kubernetes.io/tls Secret holding tls.crt and tls.key)" -}}
{{- end -}}
{{- if and $v.modelVolume.enabled (empty $v.modelVolume.source) -}}
{{- fail "modelVolume.enabled=true needs modelVolume.source (a volume source, e.g. persistentVolumeClaim: {claimName: gguf-models})" -}}
{{- end -}}
{{- $replicas := ternary $v.agent.replicaCount $v.replicaCount (eq $v.mode "sidecar") | int -}}
{{- if and (eq $v.persistence.type "pvc") (gt $replicas 1) (not (has "ReadWriteMany" $v.persistence.pvc.accessModes)) -}}
{{- fail (printf "persistence.type=pvc with %d replicas: one ReadWriteOnce claim cannot back several pods; use 1 replica, a ReadWriteMany claim, or persistence.type=emptyDir" $replicas) -}}
{{- end -}}
{{- if not $v.spicepod.existingConfigMap -}}
{{- $pod := $v.spicepod.content -}}
{{- if empty $pod -}}
{{- $pod = fromYaml (include "satchel.spicepodContent" .) -}}
{{- else if kindIs "string" $pod -}}
{{- $pod = fromYaml $pod -}}
{{- if hasKey $pod "Error" -}}
{{- fail (printf "spicepod.content is not valid YAML: %s" $pod.Error) -}}
{{- end -}}
{{- end -}}
{{- if not (kindIs "map" $pod) -}}
{{- fail "spicepod.content must be a YAML map (or a string holding one)" -}}
{{- end -}}
{{- if ne (toString $pod.kind) "Spicepod" -}}
{{- fail (printf "spicepod.content.kind must be Spicepod (got %q)" (toString $pod.kind)) -}}
{{- end -}}
{{- include "satchel.assertNoInlineSecrets" (dict "path" "spicepod.content" "value" $pod "key" "" "sensitive" false) -}}
{{- $rtTls := dig "runtime" "tls" "enabled" false $pod -}}
{{- if and $v.tls.enabled (not $rtTls) -}}
{{- fail "tls.enabled=true but the spicepod's runtime.tls.enabled is not true: Satchel would serve plain HTTP while the probes speak HTTPS. Set runtime.tls {enabled: true, certificate_file: <tls.mountPath>/tls.crt, key_file: <tls.mountPath>/tls.key}" -}}
{{- end -}}
{{- if and $rtTls (not $v.tls.enabled) -}}
{{- fail "the spicepod enables runtime.tls but tls.enabled=false: set tls.enabled=true and tls.secretName so the key pair is mounted and the probes use HTTPS" -}}
{{- end -}}
{{- end -}}
{{- include "satchel.assertNoInlineEnv" (dict "path" "env" "env" $v.env) -}}
{{- if eq $v.mode "sidecar" -}}
{{- include "satchel.assertNoInlineEnv" (dict "path" "agent.env" "env" $v.agent.env) -}}
{{- end -}}
{{- end -}}

{{/*
Walks the spicepod and fails on a credential written inline. A value under a key that
names a credential (…pass, …password, …secret, …token, …api_key, …private_key,
…access_key, …_auth, the api_key auth keys) must be a ${secrets:NAME} / ${env:NAME} reference; a URL must not
carry a literal password; headers must not carry a literal Bearer/Basic credential.
*/}}
{{- define "satchel.assertNoInlineSecrets" -}}
{{- $path := .path -}}
{{- $value := .value -}}
{{- $ref := "\\$\\{(secrets|env):[^}]+\\}" -}}
{{- if kindIs "map" $value -}}
{{- range $k, $item := $value -}}
{{- $key := lower (toString $k) -}}
{{- $sensitive := or (regexMatch "(pass|passwd|password|secret|token|api_key|apikey|private_key|access_key|secret_key|credentials?|_auth)$" $key) (and (eq $key "keys") (regexMatch "api_key$" $path)) -}}
{{- include "satchel.assertNoInlineSecrets" (dict "path" (printf "%s.%s" $path $k) "value" $item "key" $key "sensitive" $sensitive) -}}
{{- end -}}
{{- else if kindIs "slice" $value -}}
{{- range $i, $item := $value -}}
{{- include "satchel.assertNoInlineSecrets" (dict "path" (printf "%s[%d]" $path $i) "value" $item "key" $.key "sensitive" $.sensitive) -}}
{{- end -}}
{{- else if and .sensitive (not (kindIs "invalid" $value)) (not (kindIs "bool" $value)) -}}
{{- $s := toString $value -}}
{{- if and (ne $s "") (not (regexMatch $ref $s)) -}}
{{- fail (printf "%s: credentials never go inline in the spicepod; write ${secrets:NAME} and provide NAME with secretEnv or envFrom" $path) -}}
{{- end -}}
{{- else if kindIs "string" $value -}}
{{- if and (regexMatch "://[^/@\\s]*:[^/@\\s]+@" $value) (not (regexMatch (printf "://[^/@\\s]*:%s@" $ref) $value)) -}}
{{- fail (printf "%s: the URL carries a literal password; write ${secrets:NAME} in its place and provide NAME with secretEnv or envFrom" $path) -}}
{{- end -}}
{{- if and (regexMatch "(?i)(bearer|basic|token)\\s+[^$\\s]" $value) (regexMatch "(header|auth)" (toString .key)) -}}
{{- fail (printf "%s: the header carries a literal credential; write ${secrets:NAME} in its place" $path) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* An env entry whose name names a credential must come from a Secret, not `value`. */}}
{{- define "satchel.assertNoInlineEnv" -}}
{{- $path := .path -}}
{{- range $i, $e := .env -}}
{{- if and (hasKey $e "value") (regexMatch "(?i)(pass|passwd|password|secret|token|api_?key|private_?key|access_?key|credentials?)" (toString $e.name)) -}}
{{- fail (printf "%s[%d] (%s): credentials come from Secrets; use valueFrom.secretKeyRef, secretEnv or envFrom instead of an inline value" $path $i $e.name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
