// Package console is Blueprint's local console: an OTLP receiver that keeps
// the system's recent traces, their log records and its latest metrics in
// bounded memory, and the web pages that show them — the architecture with
// its rates and breakers, a trace list and one trace's waterfall beside its
// logs, the event flow with the dead letters, and the fault switches.
//
// Everything it shows comes from the services' own OpenTelemetry export
// (OTLP/HTTP, protobuf or JSON), so the same views can be rebuilt on any
// OpenTelemetry back end (docs/console.md). In `--target=all` the services
// export to it in-process over loopback; `--target=console` runs it alone,
// for services in other processes to point OTEL_EXPORTER_OTLP_ENDPOINT at.
package console
