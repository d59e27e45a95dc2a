{{/* Names and labels. */}}
{{- define "godoauth-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "godoauth-relay.fullname" -}}
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

{{- define "godoauth-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "godoauth-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "godoauth-relay.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "godoauth-relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "godoauth-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "godoauth-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where the pod finds what the relay logs in to Vault with. */}}
{{- define "godoauth-relay.configDir" -}}/etc/godoauth-relay{{- end }}
{{- define "godoauth-relay.agentTokenFile" -}}/vault/secrets/token{{- end }}
{{- define "godoauth-relay.saTokenDir" -}}/var/run/secrets/vault{{- end }}
{{- define "godoauth-relay.approleDir" -}}/etc/godoauth-relay-approle{{- end }}
{{- define "godoauth-relay.tokenDir" -}}/etc/godoauth-relay-token{{- end }}
{{- define "godoauth-relay.caDir" -}}/etc/godoauth-relay-vault-ca{{- end }}

{{/*
The relay's YAML: values.config with http.addr from containerPort and
storage.vault's login from vault.login.
*/}}
{{- define "godoauth-relay.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $http := get $cfg "http" | default dict -}}
{{- $_ := set $http "addr" (printf ":%d" (int .Values.containerPort)) -}}
{{- $_ := set $cfg "http" $http -}}
{{- $storage := get $cfg "storage" | default dict -}}
{{- $vault := get $storage "vault" | default dict -}}
{{- range $k := list "auth_token" "auth_token_file" "approle" "kubernetes" "proto" "host" "port" "addresses" }}
{{- if hasKey $vault $k }}
{{- fail (printf "config.storage.vault.%s: set the Vault address with vault.address and the login with vault.login" $k) }}
{{- end }}
{{- end }}
{{- $login := .Values.vault.login -}}
{{- if eq $login.mode "agent" }}
{{- $_ := set $vault "auth_token_file" (include "godoauth-relay.agentTokenFile" .) }}
{{- else if eq $login.mode "token" }}
{{- $_ := required "vault.login.token.existingSecret is required with vault.login.mode=token" $login.token.existingSecret }}
{{- $_ := set $vault "auth_token_file" (printf "%s/%s" (include "godoauth-relay.tokenDir" .) $login.token.key) }}
{{- else if eq $login.mode "approle" }}
{{- $_ := required "vault.login.approle.existingSecret is required with vault.login.mode=approle" $login.approle.existingSecret }}
{{- $roleID := required "vault.login.approle.roleID is required with vault.login.mode=approle" $login.approle.roleID }}
{{- $_ := set $vault "approle" (dict "role_id" $roleID "mount" $login.approle.mount "secret_id_file" (printf "%s/%s" (include "godoauth-relay.approleDir" .) $login.approle.secretIDKey)) }}
{{- else if eq $login.mode "kubernetes" }}
{{- $_ := set $vault "kubernetes" (dict "role" (required "vault.login.kubernetes.role is required" $login.kubernetes.role) "mount" $login.kubernetes.mount "token_file" (printf "%s/token" (include "godoauth-relay.saTokenDir" .))) }}
{{- else }}
{{- fail (printf "vault.login.mode: want agent, kubernetes, approle or token, got %q" $login.mode) }}
{{- end }}
{{- $_ := set $storage "vault" $vault -}}
{{- $_ := set $cfg "storage" $storage -}}
{{- toYaml $cfg }}
{{- end }}
