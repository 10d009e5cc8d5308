{{- define "kipam.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "kipam.labels" -}}
app.kubernetes.io/name: kipam
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kipam.selectorLabels" -}}
app.kubernetes.io/name: kipam
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- /*
kipam.orphanGrace returns .Values.orphanGrace, failing the render unless it
exceeds the webhook timeout plus the API server's request timeout (60s by
default): a claim create the webhook allowed can still be stored until its
request times out, so a shorter grace could let the orphan sweep release a
prefix a claim is about to be stored with. The manager refuses to start
below the same bound. The value is a Go duration, one or more
<number><unit> terms (1m30s, 0.5h, 75000ms); it is summed in nanoseconds.
*/ -}}
{{- define "kipam.orphanGrace" -}}
{{- $grace := toString .Values.orphanGrace }}
{{- $ns := dict "ns" 1 "us" 1000 "µs" 1000 "μs" 1000 "ms" 1000000 "s" 1000000000 "m" 60000000000 "h" 3600000000000 }}
{{- $terms := regexFindAll "[0-9]*(\\.[0-9]*)?(ns|us|µs|μs|ms|s|m|h)" $grace -1 }}
{{- if or (not $terms) (ne (join "" $terms) $grace) }}
{{- fail (printf "orphanGrace %q is not a Go duration such as 2m, 90s or 1m30s" $grace) }}
{{- end }}
{{- $total := 0.0 }}
{{- range $terms }}
{{- $number := regexFind "^[0-9]*(\\.[0-9]*)?" . }}
{{- if not (regexMatch "[0-9]" $number) }}
{{- fail (printf "orphanGrace %q is not a Go duration such as 2m, 90s or 1m30s" $grace) }}
{{- end }}
{{- $total = addf $total (mulf (float64 $number) (get $ns (trimPrefix $number .))) }}
{{- end }}
{{- $webhook := int .Values.webhook.timeoutSeconds }}
{{- $request := 60 }}
{{- $bound := add $webhook $request }}
{{- if le $total (mulf $bound 1000000000) }}
{{- fail (printf "orphanGrace %s is too short: it must exceed the webhook timeout (%ds) plus the API server's request timeout (%ds), %ds in all, so that the orphan sweep never releases a prefix that a claim create still in flight may be stored with" $grace $webhook $request $bound) }}
{{- end }}
{{- $grace }}
{{- end }}
