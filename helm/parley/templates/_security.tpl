{{/*
Transport security: internal mTLS (tls.*), Kafka TLS and SASL (kafka.tls,
kafka.sasl), Cassandra login and TLS (cassandra.auth, cassandra.tls,
cassandra.localDatacenter). The binaries read every setting from PARLEY_*
environment variables; certificates come from Secrets mounted read-only
under /etc/parley, and are read again by the binaries when the kubelet
updates them (a renewed cert-manager Certificate needs no restart).
*/}}

{{/*
Environment for one service: (dict "ctx" $ "grpc" true "kafka" true
"cassandra" false).
*/}}
{{- define "parley.securityEnv" -}}
{{- $v := .ctx.Values }}
{{- if and .grpc $v.tls.enabled }}
{{- if not $v.tls.existingSecret }}
{{- fail "tls.enabled needs tls.existingSecret: a Secret with tls.crt, tls.key and ca.crt (a cert-manager Certificate makes one)" }}
{{- end }}
- name: PARLEY_TLS_CA
  value: /etc/parley/tls/ca.crt
- name: PARLEY_TLS_CERT
  value: /etc/parley/tls/tls.crt
- name: PARLEY_TLS_KEY
  value: /etc/parley/tls/tls.key
{{- with $v.tls.serverName }}
- name: PARLEY_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if .kafka }}
{{- if $v.kafka.tls.enabled }}
- name: PARLEY_KAFKA_TLS
  value: "1"
{{- if $v.kafka.tls.caSecret }}
- name: PARLEY_KAFKA_TLS_CA
  value: /etc/parley/kafka-ca/ca.crt
{{- end }}
{{- with $v.kafka.tls.serverName }}
- name: PARLEY_KAFKA_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with $v.kafka.sasl.mechanism }}
{{- if not (and $v.kafka.sasl.username $v.kafka.sasl.existingSecret) }}
{{- fail "kafka.sasl.mechanism needs kafka.sasl.username and kafka.sasl.existingSecret (the Secret holding the password)" }}
{{- end }}
{{- if and (eq . "PLAIN") (not $v.kafka.tls.enabled) }}
{{- fail "kafka.sasl.mechanism PLAIN sends the password in clear: turn kafka.tls.enabled on" }}
{{- end }}
- name: PARLEY_KAFKA_SASL_MECHANISM
  value: {{ . | quote }}
- name: PARLEY_KAFKA_SASL_USER
  value: {{ $v.kafka.sasl.username | quote }}
- name: PARLEY_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.sasl.existingSecret }}
      key: {{ $v.kafka.sasl.passwordKey }}
{{- end }}
{{- end }}
{{- if .cassandra }}
{{- with $v.cassandra.auth.existingSecret }}
- name: PARLEY_CASSANDRA_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.cassandra.auth.usernameKey }}
- name: PARLEY_CASSANDRA_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.cassandra.auth.passwordKey }}
{{- end }}
{{- if $v.cassandra.tls.enabled }}
- name: PARLEY_CASSANDRA_TLS
  value: "1"
{{- if $v.cassandra.tls.caSecret }}
- name: PARLEY_CASSANDRA_TLS_CA
  value: /etc/parley/cassandra-ca/ca.crt
{{- end }}
{{- with $v.cassandra.tls.serverName }}
- name: PARLEY_CASSANDRA_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with $v.cassandra.localDatacenter }}
- name: PARLEY_CASSANDRA_LOCAL_DC
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Volume mounts of the certificate Secrets that are configured (root
context).
*/}}
{{- define "parley.securityMounts" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/parley/tls
  readOnly: true
{{- end }}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/parley/kafka-ca
  readOnly: true
{{- end }}
{{- if and .Values.cassandra.tls.enabled .Values.cassandra.tls.caSecret }}
- name: cassandra-ca
  mountPath: /etc/parley/cassandra-ca
  readOnly: true
{{- end }}
{{- end }}

{{/*
The volumes of those Secrets; a CA taken from another key of its Secret
appears as ca.crt.
*/}}
{{- define "parley.securityVolumes" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caSecretKey }}
        path: ca.crt
{{- end }}
{{- if and .Values.cassandra.tls.enabled .Values.cassandra.tls.caSecret }}
- name: cassandra-ca
  secret:
    secretName: {{ .Values.cassandra.tls.caSecret }}
    items:
      - key: {{ .Values.cassandra.tls.caSecretKey }}
        path: ca.crt
{{- end }}
{{- end }}
