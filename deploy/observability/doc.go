// Package observability holds no code: it is the home of Blueprint's
// monitoring stack configuration (Prometheus scrape config, recording and
// alerting rules with their promtool tests, Grafana datasources and
// dashboards, OpenTelemetry Collector, Tempo and Loki configs) and of the
// tests that hold those files to the metrics the services really export.
// The stack is the same whether the services run in `all` mode or alone:
// only the scrape targets change (prometheus/prometheus.yml).
package observability
