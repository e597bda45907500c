{{- /*
A Prometheus duration (the schema's pattern: 1y2w3d4h5m6s7ms, or 0) in
milliseconds. Years and days as Prometheus counts them (365 d, 24 h).
*/}}
{{- define "websocket-server.durationMs" -}}
{{- $parts := regexReplaceAll "^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$" . "${1},${2},${3},${4},${5},${6},${7}" | splitList "," -}}
{{- $ms := 0 -}}
{{- if eq (len $parts) 7 -}}
{{- $units := list 31536000000 604800000 86400000 3600000 60000 1000 1 -}}
{{- range $i, $n := $parts -}}
{{- if $n -}}
{{- $ms = add $ms (mul (atoi $n) (index $units $i)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $ms -}}
{{- end -}}

{{- /*
Fail when a monitor's scrapeTimeout is longer than its interval: the
prometheus-operator refuses such a monitor whole ("scrapeTimeout greater
than scrapeInterval"), and nothing is scraped. Call with (list "name" .).
*/}}
{{- define "websocket-server.checkScrapeTimeout" -}}
{{- $name := index . 0 -}}
{{- $monitor := index . 1 -}}
{{- with $monitor.scrapeTimeout -}}
{{- $timeout := include "websocket-server.durationMs" . | atoi -}}
{{- $interval := include "websocket-server.durationMs" $monitor.interval | atoi -}}
{{- if gt $timeout $interval -}}
{{- fail (printf "monitoring.%s.scrapeTimeout (%s) is longer than its interval (%s): the prometheus-operator would refuse the monitor and scrape nothing" $name . $monitor.interval) -}}
{{- end -}}
{{- end -}}
{{- end -}}
