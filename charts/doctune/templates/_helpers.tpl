{{/* Names, labels and the pieces every workload shares. */}}

{{- define "doctune.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "doctune.name" -}}
{{- printf "%s-%s" (include "doctune.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "doctune.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "doctune.labels" -}}
{{ include "doctune.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "doctune.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Object names shared between templates. */}}
{{- define "doctune.apiName" -}}{{ include "doctune.name" (dict "root" . "component" "api") }}{{- end -}}
{{- define "doctune.consoleName" -}}{{ include "doctune.name" (dict "root" . "component" "console") }}{{- end -}}
{{- define "doctune.operatorName" -}}{{ include "doctune.name" (dict "root" . "component" "operator") }}{{- end -}}
{{- define "doctune.rayName" -}}{{ include "doctune.name" (dict "root" . "component" "ray") }}{{- end -}}
{{- define "doctune.rayHeadService" -}}{{ include "doctune.rayName" . }}-head-svc{{- end -}}
{{- define "doctune.minioName" -}}{{ include "doctune.name" (dict "root" . "component" "minio") }}{{- end -}}
{{- define "doctune.postgresName" -}}{{ include "doctune.name" (dict "root" . "component" "postgresql") }}{{- end -}}

{{/* Secret names: the user's existing Secret, or the one the chart makes. */}}
{{- define "doctune.adminKeySecret" -}}
{{- default (include "doctune.name" (dict "root" . "component" "admin-key")) .Values.adminKey.existingSecret -}}
{{- end -}}
{{- define "doctune.rayTokenSecret" -}}
{{- default (include "doctune.name" (dict "root" . "component" "ray-token")) .Values.rayCluster.auth.existingSecret -}}
{{- end -}}
{{- define "doctune.s3Secret" -}}
{{- if eq .Values.objectStore.mode "external" -}}
{{- .Values.objectStore.external.existingSecret -}}
{{- else -}}
{{- default (include "doctune.name" (dict "root" . "component" "minio-root")) .Values.objectStore.minio.existingSecret -}}
{{- end -}}
{{- end -}}
{{- define "doctune.dbSecret" -}}
{{- if eq .Values.postgresql.mode "external" -}}
{{- .Values.postgresql.external.existingSecret -}}
{{- else -}}
{{- include "doctune.postgresName" . -}}
{{- end -}}
{{- end -}}

{{- define "doctune.s3Endpoint" -}}
{{- if eq .Values.objectStore.mode "external" -}}
{{- .Values.objectStore.external.endpoint -}}
{{- else -}}
{{- printf "http://%s:9000" (include "doctune.minioName" .) -}}
{{- end -}}
{{- end -}}

{{/* A Secret's value: the one already in the cluster (kept across upgrades), else a new random one. */}}
{{- define "doctune.keepOrRandom" -}}
{{- $old := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $old (index ($old.data | default dict) .key) -}}
{{- index $old.data .key | b64dec -}}
{{- else -}}
{{- .random -}}
{{- end -}}
{{- end -}}

{{/* Every credential the chart generates, made once per render (kept in .Values.__generated, so that
     each Secret that carries one carries the same value) and kept across upgrades (lookup). */}}
{{- define "doctune.generated" -}}
{{- if not (hasKey .Values "__generated") -}}
{{- $g := dict -}}
{{- $_ := set $g "adminKey" (include "doctune.keepOrRandom" (dict "root" . "name" (include "doctune.adminKeySecret" .) "key" "admin-key" "random" (printf "dtk_%s_%s" (randAlphaNum 12 | lower) (randAlphaNum 32)))) -}}
{{- $_ := set $g "rayToken" (include "doctune.keepOrRandom" (dict "root" . "name" (include "doctune.rayTokenSecret" .) "key" "auth_token" "random" (randAlphaNum 48))) -}}
{{- $minio := include "doctune.name" (dict "root" . "component" "minio-root") -}}
{{- $_ := set $g "minioAccessKey" (include "doctune.keepOrRandom" (dict "root" . "name" $minio "key" "accessKey" "random" (printf "doctune%s" (randAlphaNum 12 | lower)))) -}}
{{- $_ := set $g "minioSecretKey" (include "doctune.keepOrRandom" (dict "root" . "name" $minio "key" "secretKey" "random" (randAlphaNum 40))) -}}
{{- $_ := set $g "pgPassword" (include "doctune.keepOrRandom" (dict "root" . "name" (include "doctune.postgresName" .) "key" "password" "random" (randAlphaNum 32))) -}}
{{- $_ := set .Values "__generated" $g -}}
{{- end -}}
{{- end -}}

{{/* A key of an existing Secret in the release namespace ("" when absent, as in an offline render). */}}
{{- define "doctune.existingValue" -}}
{{- $s := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $s (index ($s.data | default dict) .key) -}}{{- index $s.data .key | b64dec -}}{{- end -}}
{{- end -}}

{{- define "doctune.databaseUrl" -}}
{{- if eq .Values.postgresql.mode "external" -}}
{{- include "doctune.existingValue" (dict "root" . "name" .Values.postgresql.external.existingSecret "key" "url") -}}
{{- else -}}
{{- include "doctune.generated" . -}}
{{- $pg := .Values.postgresql.internal -}}
{{- printf "postgresql+psycopg://%s:%s@%s:5432/%s" $pg.user .Values.__generated.pgPassword (include "doctune.postgresName" .) $pg.database -}}
{{- end -}}
{{- end -}}

{{/* accessKey or secretKey of the object store (for the RayJobs' credentials Secret). */}}
{{- define "doctune.s3Value" -}}
{{- if and (eq .root.Values.objectStore.mode "minio") (not .root.Values.objectStore.minio.existingSecret) -}}
{{- include "doctune.generated" .root -}}
{{- index .root.Values.__generated (ternary "minioAccessKey" "minioSecretKey" (eq .key "accessKey")) -}}
{{- else -}}
{{- include "doctune.existingValue" (dict "root" .root "name" (include "doctune.s3Secret" .root) "key" .key) -}}
{{- end -}}
{{- end -}}

{{- define "doctune.jobEnvSecret" -}}{{ include "doctune.name" (dict "root" . "component" "job-env") }}{{- end -}}

{{/* Where doctune's components are (doctune.config.Settings), without any credential: every doctune
     container and the Ray containers get these. */}}
{{- define "doctune.settingsEnv" -}}
- name: DOCTUNE_HOME
  value: /var/run/doctune
- name: DOCTUNE_S3_ENDPOINT
  value: {{ include "doctune.s3Endpoint" . | quote }}
- name: DOCTUNE_S3_REGION
  value: {{ .Values.objectStore.region | quote }}
- name: DOCTUNE_BUCKET
  value: {{ .Values.objectStore.bucket | quote }}
- name: DOCTUNE_RAY_DASHBOARD_URL
  value: {{ printf "http://%s:8265" (include "doctune.rayHeadService" .) | quote }}
- name: DOCTUNE_RAY_GCS_ADDRESS
  value: {{ printf "%s:6379" (include "doctune.rayHeadService" .) | quote }}
- name: DOCTUNE_SERVE_URL
  value: {{ printf "http://%s:8000" (include "doctune.rayHeadService" .) | quote }}
- name: DOCTUNE_API_URL
  value: {{ printf "http://%s.%s.svc:%d" (include "doctune.apiName" .) .Release.Namespace (int .Values.api.service.port) | quote }}
- name: DOCTUNE_RUNNER
  value: {{ .Values.runner | quote }}
{{- end -}}

{{/* The credentials of the API (and its init container): each from a Secret, never a plain value. */}}
{{- define "doctune.credentialEnv" -}}
- name: DOCTUNE_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ include "doctune.dbSecret" . }}, key: url}}
- name: DOCTUNE_S3_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ include "doctune.s3Secret" . }}, key: accessKey}}
- name: DOCTUNE_S3_SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ include "doctune.s3Secret" . }}, key: secretKey}}
- name: DOCTUNE_ADMIN_KEY
  valueFrom: {secretKeyRef: {name: {{ include "doctune.adminKeySecret" . }}, key: admin-key}}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom: {secretKeyRef: {name: {{ include "doctune.rayTokenSecret" . }}, key: auth_token}}
{{- end -}}

{{- define "doctune.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{/* The container security context; pass (dict "root" . "readOnly" false) for programs that write to /. */}}
{{- define "doctune.containerSecurityContext" -}}
{{- $ctx := deepCopy .root.Values.containerSecurityContext -}}
{{- if hasKey . "readOnly" -}}{{- $_ := set $ctx "readOnlyRootFilesystem" .readOnly -}}{{- end -}}
{{- $_ := set $ctx "runAsNonRoot" true -}}
{{ toYaml $ctx }}
{{- end -}}


{{/* A Ray container (head or worker) of the RayCluster: where the components are, no credential. */}}
{{- define "doctune.rayContainer" -}}
{{- $root := .root -}}
name: {{ .name }}
image: {{ include "doctune.image" $root }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
env:
  {{- include "doctune.settingsEnv" $root | nindent 2 }}
  # Ray processes take the database URL and the S3 keys only from the runtime env of the job they run
  - {name: DOCTUNE_CREDENTIALS_FROM_ENV, value: "1"}
  - {name: HOME, value: /tmp}
securityContext: {{- include "doctune.containerSecurityContext" (dict "root" $root "readOnly" false) | nindent 2 }}
resources: {{- toYaml .resources | nindent 2 }}
volumeMounts:
  - {name: tmp, mountPath: /tmp}
{{- end -}}
